//! A recording HTTP server on loopback that also plays the small part of
//! GitHub's issues API clusterup uses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    /// Every header, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    /// (number, title, open)
    issues: Vec<(u64, String, bool)>,
    /// (number, head branch, open)
    pulls: Vec<(u64, String, bool)>,
    /// Requests to `/flaky…` still to answer 500 (and not record).
    failing: usize,
}

pub struct Receiver {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
                let (mut length, mut authorization, mut headers) = (0, None, Vec::new());
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap_or(("", ""));
                    headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        "authorization" => authorization = Some(value.trim().to_string()),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let reply = {
                    let mut s = shared.lock().unwrap();
                    if path.starts_with("/flaky") && s.failing > 0 {
                        s.failing -= 1;
                        let _ = write!(
                            stream,
                            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                        continue;
                    }
                    s.requests.push(Request {
                        method: method.clone(),
                        path: path.clone(),
                        authorization,
                        headers,
                        body: body.clone(),
                    });
                    matrix(&path).unwrap_or_else(|| github(&mut s, &method, &path, &body))
                };
                let text = reply.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        Receiver { port, state }
    }

    /// The next `n` requests to `/flaky…` fail with 500.
    pub fn fail_next(&self, n: usize) {
        self.state.lock().unwrap().failing = n;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn to(&self, prefix: &str) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.path.starts_with(prefix)).collect()
    }

    /// The head branches of the open pull requests.
    pub fn open_pulls(&self) -> Vec<String> {
        self.state.lock().unwrap().pulls.iter().filter(|p| p.2).map(|p| p.1.clone()).collect()
    }

    pub fn open_issues(&self) -> Vec<String> {
        self.state.lock().unwrap().issues.iter().filter(|i| i.2).map(|i| i.1.clone()).collect()
    }
}

/// The answers of a Matrix homeserver that clusterup reads.
fn matrix(path: &str) -> Option<Value> {
    let rest = path.strip_prefix("/_matrix/client/v3/")?;
    Some(if rest == "login" {
        json!({"access_token": "syt_from_login", "user_id": "@bot:localhost"})
    } else if rest.starts_with("directory/room/") {
        json!({"room_id": "!resolved:localhost"})
    } else {
        json!({"event_id": "$sent"})
    })
}

fn github(s: &mut State, method: &str, path: &str, body: &Value) -> Value {
    if let Some(rest) = path.strip_prefix("/gh/repos/o/r/pulls") {
        return match (method, rest.split('?').next().unwrap_or("")) {
            ("GET", "") => json!(
                s.pulls
                    .iter()
                    .filter(|p| p.2)
                    .map(|p| json!({"number": p.0, "head": {"ref": p.1}}))
                    .collect::<Vec<_>>()
            ),
            ("POST", "") => {
                let number = 100 + s.pulls.len() as u64;
                s.pulls.push((number, body["head"].as_str().unwrap_or("").to_string(), true));
                json!({"number": number})
            }
            ("PATCH", n) => {
                let n: u64 = n.trim_start_matches('/').parse().unwrap_or(0);
                if body["state"] == "closed" {
                    s.pulls.iter_mut().filter(|p| p.0 == n).for_each(|p| p.2 = false);
                }
                json!({"number": n})
            }
            _ => json!({}),
        };
    }
    let Some(rest) = path.strip_prefix("/gh/repos/o/r/issues") else { return json!({}) };
    match (method, rest) {
        ("GET", _) => {
            json!(s.issues.iter().filter(|i| i.2).map(|i| json!({"number": i.0, "title": i.1})).collect::<Vec<_>>())
        }
        ("POST", "") => {
            let number = s.issues.len() as u64 + 1;
            s.issues.push((number, body["title"].as_str().unwrap_or("").to_string(), true));
            json!({"number": number})
        }
        ("PATCH", n) => {
            let n: u64 = n.trim_start_matches('/').parse().unwrap_or(0);
            if body["state"] == "closed" {
                s.issues.iter_mut().filter(|i| i.0 == n).for_each(|i| i.2 = false);
            }
            json!({"number": n})
        }
        _ => json!({}),
    }
}

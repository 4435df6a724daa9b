//! The host page over real HTTP (curl, as a browser without JavaScript
//! would): sign-in, what it shows, who gets forms, and that a form without
//! the session's CSRF token is refused while a real one pauses the stack
//! for the CLI too.

use std::process::Command;

use crate::serve::{OPERATE, READ, Server};
use crate::support::Stack;

/// `curl -s -i` with these arguments: the status, headers and body.
fn curl(server: &Server, path: &str, args: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-s", "-i"])
        .args(args)
        .arg(format!("http://127.0.0.1:{}{path}", server.port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// Signs in with `token`; the session cookie.
fn sign_in(server: &Server, token: &str) -> String {
    let (status, head, _) = curl(server, "/login", &["-d", &format!("token={token}")]);
    assert_eq!(status, 303, "{head}");
    let cookie = head.lines().find_map(|l| l.strip_prefix("set-cookie: ")).expect("a session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains(token), "the token itself is not in the cookie");
    cookie.split(';').next().unwrap().to_string()
}

fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + "name=\"csrf\" value=\"".len();
    page[at..at + 64].to_string()
}

/// A stack with one applied and one rolled-back revision, its `serve`, and
/// web's reference (its tag names the rejected `bad` image).
pub fn served_with_two_outcomes(test: &str) -> (Stack, Server, String) {
    let (mut stack, web) = Stack::web_running(test, |s| s.image("web"));
    stack.publish("v2", &web);
    assert_eq!(stack.clusterup(&["apply", "--yes"]).code, 0);
    stack.publish("bad", &web);
    assert_eq!(stack.clusterup(&["apply", "--yes"]).code, 1);
    let server = Server::start(&stack);
    (stack, server, web)
}

#[test]
fn the_page_shows_outcomes_gives_forms_only_to_operators_and_refuses_forged_posts() {
    let (mut stack, server, web) = served_with_two_outcomes("page");

    let (status, head, _) = curl(&server, "/", &[]);
    assert_eq!(status, 303, "no session: to the sign-in page: {head}");
    assert!(head.contains("location: /login"), "{head}");
    let (status, _, body) = curl(&server, "/login", &["-d", "token=not-a-token-at-all-0123"]);
    assert_eq!(status, 401, "{body}");

    let reader = sign_in(&server, READ);
    let (status, head, page) = curl(&server, "/", &["-b", &reader]);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-security-policy: default-src 'none'"), "{head}");
    assert!(page.contains(&stack.name), "{page}");
    assert!(
        page.contains(">applied</td>") && page.contains(">rolled back</td>"),
        "both revisions with their outcome: {page}"
    );
    assert!(page.contains("<svg"), "charts");
    assert!(!page.contains("action=\"/ui/"), "no actions for a read token: {page}");
    let (status, _, _) = curl(&server, "/ui/pause", &["-b", &reader, "-d", &format!("stack={}&reason=x", stack.name)]);
    assert_eq!(status, 403, "a read session cannot pause");

    let operator = sign_in(&server, OPERATE);
    let (_, _, page) = curl(&server, "/", &["-b", &operator]);
    assert!(page.contains("action=\"/ui/pause\"") && page.contains("action=\"/ui/rollback\""), "{page}");
    let token = csrf(&page);
    // Another site's form posts with the operator's cookie but cannot know
    // the CSRF token.
    let forged = format!("stack={}&reason=forged", stack.name);
    let (status, _, _) = curl(&server, "/ui/pause", &["-b", &operator, "-d", &forged]);
    assert_eq!(status, 403);
    let (status, _, _) =
        curl(&server, "/ui/pause", &["-b", &operator, "-d", &format!("{forged}&csrf={}", "0".repeat(64))]);
    assert_eq!(status, 403);
    assert!(stack.clusterup(&["status", "--json"]).json()["paused"].is_null(), "not paused by a forged form");

    let real = format!("stack={}&reason=maintenance+window&for=1h&csrf={token}", stack.name);
    let (status, head, _) = curl(&server, "/ui/pause", &["-b", &operator, "-d", &real]);
    assert_eq!(status, 303, "{head}");
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 4, "the CLI sees the page's pause: {run:?}");
    assert!(run.all().contains("maintenance window") && run.all().contains("page:ci"), "{run:?}");
    let (_, _, page) = curl(&server, "/", &["-b", &operator]);
    assert!(page.contains("pause: done"), "the page says what the action did: {page}");
    assert!(page.contains("action=\"/ui/resume\""), "{page}");

    // What `--auto` would hold back, and why; then applied with the page's
    // approval box, as the CLI's confirmation.
    stack.publish("v2", &web);
    let compose = std::fs::read_to_string(stack.dir.join("compose.yaml")).unwrap();
    std::fs::write(stack.dir.join("compose.yaml"), format!("{compose}    environment: {{MODE: page}}\n")).unwrap();
    let form = |extra: &str| format!("stack={}&csrf={token}{extra}", stack.name);
    assert_eq!(curl(&server, "/ui/check", &["-b", &operator, "-d", &form("")]).0, 303);
    let (_, _, page) = curl(&server, "/", &["-b", &operator]);
    assert!(page.contains("check: 1 pending (recreate web); held back for --auto: structural"), "{page}");
    assert_eq!(curl(&server, "/ui/approve", &["-b", &operator, "-d", &form("")]).0, 303);
    let (_, _, page) = curl(&server, "/", &["-b", &operator]);
    assert!(page.contains("tick the box"), "no approval, nothing applied: {page}");
    assert!(!stack.env("web").contains("MODE=page"));
    assert_eq!(curl(&server, "/ui/approve", &["-b", &operator, "-d", &form("&approve=yes")]).0, 303);
    let (_, _, page) = curl(&server, "/", &["-b", &operator]);
    assert!(page.contains("approve: applied"), "{page}");
    assert!(stack.env("web").contains("MODE=page"));
}

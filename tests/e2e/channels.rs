//! Every channel, configured the way a user moving over from Watchtower
//! would (the shoutrrr URL of its documentation, pointed at a loopback
//! stand-in), sends a held-back change once over three runs, then what
//! was applied and that the condition is resolved, in its API's shape.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::receiver::Receiver;
use crate::support::{Stack, free_port};

/// A local SMTP server (STARTTLS and AUTH required) and its mailbox.
struct Smtp {
    port: u16,
    child: std::process::Child,
    mailbox: std::path::PathBuf,
    ca: std::path::PathBuf,
}

impl Smtp {
    fn start(stack: &Stack) -> Smtp {
        let dir = stack.scratch("smtp");
        let (cert, key, mailbox) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("mail"));
        std::fs::create_dir_all(&mailbox).unwrap();
        // A CA and a certificate it signed: the one way a private relay's
        // certificate is trusted (`ca_file`).
        let ca = dir.join("ca.pem");
        let openssl = |extra: &[&str], out: &[&std::path::Path]| {
            let made = Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
                .args(extra)
                .arg("-keyout")
                .arg(out[0])
                .arg("-out")
                .arg(out[1])
                .output()
                .unwrap();
            assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        };
        let ca_key = dir.join("ca.key");
        openssl(&["-subj", "/CN=clusterup test CA"], &[&ca_key, &ca]);
        let (ca_arg, ca_key_arg) = (ca.to_str().unwrap(), ca_key.to_str().unwrap());
        openssl(
            &[
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-addext",
                "basicConstraints=CA:FALSE",
            ]
            .into_iter()
            .chain(["-CA", ca_arg, "-CAkey", ca_key_arg])
            .collect::<Vec<_>>(),
            &[&key, &cert],
        );
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/smtp_server.py");
        // Debian's python3-aiosmtpd, whatever python3 comes first on PATH.
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(port.to_string())
            .args([&cert, &key, &mailbox])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 with aiosmtpd (scripts/test.sh installs python3-aiosmtpd)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP server did not start");
        Smtp { port, child, mailbox, ca }
    }

    fn mails(&self) -> Vec<(String, String)> {
        let mut names: Vec<_> = std::fs::read_dir(&self.mailbox)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".eml"))
            .collect();
        names.sort_by_key(|n| n.trim_end_matches(".eml").parse::<u32>().unwrap_or(0));
        names
            .iter()
            .map(|n| {
                let meta = std::fs::read_to_string(self.mailbox.join(n.replace(".eml", ".meta"))).unwrap();
                (meta, std::fs::read_to_string(self.mailbox.join(n)).unwrap())
            })
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn each_channel_gets_one_message_per_event_in_its_apis_shape() {
    let rx = Receiver::start();
    let (stack, web) = Stack::web_running("channels", |s| s.image("web"));
    let smtp = Smtp::start(&stack);
    let (api, port) = (rx.url(""), rx.port);
    // As Watchtower's documentation writes them; `api_url` stands in for
    // the services' fixed hosts, loopback for the rest.
    let entries = [
        format!(
            "{{url: 'discord://d1scordT0ken@934017', api_url: '{api}', template: '{{{{ stack }}}} {{{{ event }}}}{{% if resolves %}} ({{{{ resolves }}}}){{% endif %}}: {{{{ text }}}}'}}"
        ),
        format!("{{url: 'slack://hook:T0AAA-B0BBB-Sl4ckS3cret@webhook', api_url: '{api}'}}"),
        format!("{{url: 'telegram://110201543:AAHtelegramS3cret@telegram?chats=@ops,-1001234', api_url: '{api}'}}"),
        format!("{{url: 'teams://grp@tnt/alt/owner?host=org.webhook.office.com', api_url: '{api}'}}"),
        format!("'gotify://127.0.0.1:{port}/gotify/AgotifyS3cret?disabletls=yes&priority=8'"),
        format!("'ntfy://:tk_ntfyS3cret@127.0.0.1:{port}/deploys?scheme=http'"),
        format!("'matrix://bot:m4trixS3cret@127.0.0.1:{port}/?rooms=!abc:localhost,ops:localhost&disableTLS=yes'"),
        format!("'generic+http://127.0.0.1:{port}/generic/hook'"),
        format!(
            "{{url: 'smtp://user:p4ss-smtp@127.0.0.1:{}/?from=clusterup@example.com&to=ops@example.com&encryption=ExplicitTLS', ca_file: '{}'}}",
            smtp.port,
            smtp.ca.display()
        ),
    ];
    let config = std::fs::read_to_string(stack.config_path()).unwrap();
    let list: String = entries.iter().map(|e| format!("      - {e}\n")).collect();
    std::fs::write(stack.config_path(), format!("{config}    notify:\n{list}")).unwrap();

    stack.write_compose(&format!("services:\n  web:\n    image: {web}\n    environment: {{MODE: two}}\n"));
    for now in ["2026-12-01T00:00:00Z", "2026-12-01T00:15:00Z", "2026-12-01T00:30:00Z"] {
        let run = stack.clusterup_at(now, &["apply", "--auto"]);
        assert_eq!(run.code, 4, "held back: {run:?}");
        assert!(!run.all().contains("failed"), "every channel delivers: {run:?}");
        for secret in [
            "d1scordT0ken",
            "Sl4ckS3cret",
            "AAHtelegramS3cret",
            "AgotifyS3cret",
            "tk_ntfyS3cret",
            "m4trixS3cret",
            "p4ss-smtp",
        ] {
            assert!(!run.all().contains(secret), "{secret}: {run:?}");
        }
    }
    let run = stack.clusterup_at("2026-12-01T01:00:00Z", &["apply", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");

    // Per channel: needs approval once, then applied, then resolved.
    let titles = |texts: Vec<String>| -> Vec<String> {
        texts
            .iter()
            .map(|t| {
                ["resolved", "needs approval", "applied"]
                    .into_iter()
                    .find(|k| t.contains(&format!(": {k}")))
                    .unwrap_or("?")
                    .to_string()
            })
            .collect()
    };
    let expected = ["needs approval", "applied", "resolved"];

    let discord = rx.to("/api/webhooks/934017/d1scordT0ken");
    assert_eq!(titles(discord.iter().map(|r| r.body["embeds"][0]["title"].to_string()).collect()), expected);
    assert_eq!(discord[0].body["username"], "clusterup");
    assert_eq!(discord[0].body["embeds"][0]["color"], 0xf9a825, "amber for approval");
    // Discord's target has a template of its own.
    let description = |i: usize| discord[i].body["embeds"][0]["description"].as_str().unwrap_or("").to_string();
    assert!(description(0).starts_with(&format!("{} needs_approval: held back: ", stack.name)), "{discord:?}");
    assert!(description(0).contains("recreate web"), "{discord:?}");
    assert_eq!(description(2), format!("{} resolved (needs_approval): ", stack.name));

    let slack = rx.to("/services/T0AAA/B0BBB/Sl4ckS3cret");
    assert_eq!(titles(slack.iter().map(|r| r.body["text"].to_string()).collect()), expected);

    let telegram = rx.to("/bot110201543:AAHtelegramS3cret/sendMessage");
    assert_eq!(telegram.len(), 6, "two chats × three events: {telegram:?}");
    assert_eq!(
        (telegram[0].body["chat_id"].clone(), telegram[1].body["chat_id"].clone()),
        (json!("@ops"), json!(-1001234))
    );
    assert_eq!(telegram[0].body["parse_mode"], "HTML");
    assert!(telegram[0].body["text"].as_str().unwrap().starts_with("<b>clusterup: stack"), "{telegram:?}");

    let teams = rx.to("/webhookb2/grp@tnt/IncomingWebhook/alt/owner");
    assert_eq!(titles(teams.iter().map(|r| r.body["title"].to_string()).collect()), expected);
    assert_eq!(
        (teams[0].body["@type"].clone(), teams[0].body["@context"].clone()),
        (json!("MessageCard"), json!("https://schema.org/extensions"))
    );

    let gotify = rx.to("/gotify/message");
    assert_eq!(titles(gotify.iter().map(|r| r.body["title"].to_string()).collect()), expected);
    assert_eq!(gotify[0].header("x-gotify-key"), Some("AgotifyS3cret"));
    assert_eq!(gotify[0].body["priority"], 8);

    let ntfy: Vec<_> = rx.requests().into_iter().filter(|r| r.body["topic"] == "deploys").collect();
    assert_eq!(titles(ntfy.iter().map(|r| r.body["title"].to_string()).collect()), expected);
    assert_eq!(ntfy[0].authorization.as_deref(), Some("Bearer tk_ntfyS3cret"));
    assert_eq!(ntfy[0].body["tags"], json!(["hourglass"]));

    let logins = rx.to("/_matrix/client/v3/login");
    assert_eq!(logins.len(), 3, "one login per delivery");
    assert_eq!(logins[0].body["identifier"]["user"], "bot");
    let sends: Vec<_> = rx.requests().into_iter().filter(|r| r.path.contains("/send/m.room.message/")).collect();
    assert_eq!(sends.len(), 6, "two rooms × three events");
    assert!(sends.iter().all(|r| r.method == "PUT" && r.authorization.as_deref() == Some("Bearer syt_from_login")));
    assert!(
        sends[0].path.contains("/rooms/%21abc%3Alocalhost/")
            && sends[1].path.contains("/rooms/%21resolved%3Alocalhost/"),
        "{sends:?}"
    );
    assert_eq!(sends[0].body["msgtype"], "m.text");
    assert!(rx.to("/_matrix/client/v3/directory/room/%23ops%3Alocalhost").len() == 3, "the alias looked up");

    let generic = rx.to("/generic/hook");
    assert_eq!(titles(generic.iter().map(|r| r.body["title"].to_string()).collect()), expected);
    assert_eq!(generic[0].body["event"], "needs_approval");

    let mails = smtp.mails();
    let subjects: Vec<String> =
        mails.iter().map(|(_, m)| m.lines().find(|l| l.starts_with("Subject:")).unwrap_or("").to_string()).collect();
    assert_eq!(titles(subjects), expected, "{mails:?}");
    assert!(
        mails.iter().all(|(meta, _)| meta.contains("tls=True") && meta.contains("user=b'user' authenticated=True")),
        "{mails:?}"
    );
    assert!(mails[0].1.contains("recreate web"), "{}", mails[0].1);
}

//! The page in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) driven over WebDriver. It signs in through the form,
//! sees both outcomes, pauses the stack with the page's own form (the CLI
//! then sees the pause), and a read session gets no forms. The run leaves
//! screenshots of the page, light and dark, in docs/screenshots/.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::serve::{OPERATE, READ, Server};
use crate::support::{Stack, free_port};

/// A chromedriver of this test's own, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver (scripts/test.sh installs chromium-driver)");
        let driver = Driver { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    async fn browser(&self, dark: bool) -> Client {
        let mut args = vec!["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"];
        args.push("--window-size=1100,900");
        if dark {
            args.push("--force-dark-mode");
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), json!({ "args": args }));
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn sign_in(browser: &Client, server: &Server, token: &str) {
    browser.goto(&format!("http://127.0.0.1:{}/", server.port)).await.unwrap();
    let form = browser.form(Locator::Css("form[action='/login']")).await.expect("redirected to sign in");
    form.set_by_name("token", token).await.unwrap();
    form.submit().await.unwrap();
    browser.wait().for_element(Locator::Css("main#main")).await.expect("the host page after signing in");
}

async fn source_with(browser: &Client, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = browser.source().await.unwrap();
        if page.contains(text) {
            return page;
        }
        assert!(Instant::now() < deadline, "the page never showed {text:?}: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn keep(name: &str, png: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

#[test]
fn a_browser_signs_in_sees_both_outcomes_pauses_and_a_reader_gets_no_forms() {
    let (stack, server, _) = crate::page::served_with_two_outcomes("browser");
    let driver = Driver::start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let operator = driver.browser(false).await;
        sign_in(&operator, &server, OPERATE).await;
        let page = source_with(&operator, &stack.name).await;
        assert!(page.contains(">applied</td>") && page.contains(">rolled back</td>"), "{page}");
        keep("host-light.png", &operator.screenshot().await.unwrap());

        let pause = operator.form(Locator::Css("form[action='/ui/pause']")).await.unwrap();
        pause.set_by_name("reason", "browser test").await.unwrap();
        pause.submit().await.unwrap();
        source_with(&operator, "pause: done").await;
        let run = stack.clusterup(&["apply", "--auto"]);
        assert_eq!(run.code, 4, "{run:?}");
        assert!(run.all().contains("browser test") && run.all().contains("page:ci"), "{run:?}");
        operator.close().await.unwrap();

        let reader = driver.browser(true).await;
        sign_in(&reader, &server, READ).await;
        source_with(&reader, "paused by page:ci").await;
        let forms = reader.find_all(Locator::Css("form[action^='/ui/']")).await.unwrap();
        assert!(forms.is_empty(), "a read session gets no action forms");
        let dark = reader.execute("return matchMedia('(prefers-color-scheme: dark)').matches", vec![]).await.unwrap();
        assert_eq!(dark, json!(true), "the dark capture follows the system's preference");
        keep("host-dark.png", &reader.screenshot().await.unwrap());
        reader.close().await.unwrap();
    });
}

/// Three hosts (three stacks named alike, each with its own project, state
/// and `serve`), following one repository: the fleet page of the first
/// shows the one that did not take the new commit as differing, and, once
/// the third stops answering, that one as unreachable with when it was
/// last seen.
#[test]
fn the_fleet_page_shows_a_host_behind_and_one_unreachable() {
    let mut hosts: Vec<Stack> = ["fleeta", "fleetb", "fleetc"].iter().map(|n| Stack::new(n)).collect();
    let repo = format!("{}/{}/web", crate::support::bed().registry, hosts[0].name);
    hosts[0].publish("v1", &format!("{repo}:v1"));
    hosts[0].publish("v2", &format!("{repo}:v2"));
    let remote = hosts[0].remote();
    remote.commit_compose(&format!("services:\n  web:\n    image: {repo}:v1\n"), "v1");
    for h in &hosts {
        let config = format!(
            "stacks:\n  - name: shop\n    project: {}\n    git: {{url: 'file://{}', branch: main, path: stack}}\n    health: {{timeout: 30s, stability: 1s}}\n",
            h.name,
            remote.bare.display()
        );
        std::fs::write(h.config_path(), config).unwrap();
        assert_eq!(h.clusterup(&["apply", "--yes"]).code, 0);
    }
    let new = remote.commit_compose(&format!("services:\n  web:\n    image: {repo}:v2\n"), "v2");
    for h in [&hosts[0], &hosts[2]] {
        assert_eq!(h.clusterup(&["apply", "--yes"]).code, 0);
    }
    let b = Server::start(&hosts[1]);
    let mut c = Server::start(&hosts[2]);
    let peers =
        format!("peer host-b http://127.0.0.1:{} {READ}\npeer host-c http://127.0.0.1:{} {READ}\n", b.port, c.port);
    let a = Server::start_with(&hosts[0], &peers);
    let driver = Driver::start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let browser = driver.browser(false).await;
        sign_in(&browser, &a, READ).await;
        browser.goto(&format!("http://127.0.0.1:{}/fleet", a.port)).await.unwrap();
        let page = source_with(&browser, "host-c").await;
        let row = |page: &str, host: &str| {
            let at = page.find(&format!("<th scope=\"row\">{host}</th>")).unwrap_or_else(|| panic!("{host}: {page}"));
            page[at..at + page[at..].find("</tr>").unwrap()].to_string()
        };
        let short = &new[..12];
        assert!(row(&page, "host-b").contains("differs (most run"), "{page}");
        assert!(row(&page, "host-b").contains(&format!("most run {short}")), "{page}");
        assert!(row(&page, "host-c").contains("same as most") && row(&page, "host-c").contains(short), "{page}");
        keep("fleet-light.png", &browser.screenshot().await.unwrap());

        assert_eq!(c.stop(), Some(0));
        browser.refresh().await.unwrap();
        let page = source_with(&browser, "unreachable").await;
        let gone = row(&page, "host-c");
        assert!(gone.contains("unreachable (last seen 20"), "{page}");
        assert!(
            row(&page, "host-b").contains("differs"),
            "the host that is down still counts with what it ran: {page}"
        );
        browser.close().await.unwrap();

        let dark = driver.browser(true).await;
        sign_in(&dark, &a, READ).await;
        dark.goto(&format!("http://127.0.0.1:{}/fleet", a.port)).await.unwrap();
        source_with(&dark, "unreachable").await;
        keep("fleet-dark.png", &dark.screenshot().await.unwrap());
        dark.close().await.unwrap();
    });
    drop(b);
}

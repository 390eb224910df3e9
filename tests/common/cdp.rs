//! A headless Chromium driven over the DevTools protocol (CDP): launch, open pages, evaluate
//! JavaScript, wait for what a page renders, take screenshots. Only what the browser tests need;
//! the browser is the system's (`apt-get install chromium`, which `.ci/run` does), never a
//! downloaded build, and it reaches nothing but loopback.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::sync::oneshot;
use tokio_util::compat::TokioAsyncReadCompatExt;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// The browser executable: `$ONVM_CHROMIUM`, else the first of the usual names on PATH.
pub fn chromium() -> PathBuf {
    if let Ok(path) = std::env::var("ONVM_CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome", "chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the browser tests need Chromium: `sudo apt-get install -y chromium` (Debian; .ci/run installs it), or set ONVM_CHROMIUM to a Chrome/Chromium binary"
    )
}

/// One running headless browser with its own empty profile (a second `Browser` is a second
/// person: separate IndexedDB, cookies, storage).
pub struct Browser {
    child: tokio::process::Child,
    _profile: tempfile::TempDir,
    sender: tokio::sync::Mutex<soketto::Sender<tokio_util::compat::Compat<tokio::net::TcpStream>>>,
    pending: Pending,
    next_id: AtomicU64,
    /// Console messages and uncaught exceptions of every page, for failure reports.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    pub async fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = tokio::process::Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                // Without these Chromium dials Google's services at start, which this
                // machine's closed network refuses, many at a time.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromium().display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_string();
                }
            }
            panic!("chromium exited before it listened for DevTools");
        })
        .await
        .expect("chromium printed its DevTools URL within 60 s");
        // Keep draining stderr so the browser never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let rest = url.strip_prefix("ws://").expect("a ws:// DevTools URL");
        let (host, path) = rest.split_once('/').expect("host/path");
        let socket = tokio::net::TcpStream::connect(host)
            .await
            .expect("connect to DevTools");
        let resource = format!("/{path}");
        let mut client = soketto::handshake::Client::new(socket.compat(), host, &resource);
        match client.handshake().await.expect("DevTools handshake") {
            soketto::handshake::ServerResponse::Accepted { .. } => {}
            other => panic!("DevTools refused the WebSocket: {other:?}"),
        }
        let mut builder = client.into_builder();
        builder.set_max_message_size(256 << 20);
        builder.set_max_frame_size(256 << 20);
        let (sender, mut receiver) = builder.finish();
        let pending: Pending = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (pending_rx, log_rx) = (pending.clone(), log.clone());
        tokio::spawn(async move {
            let mut data = Vec::new();
            loop {
                data.clear();
                if receiver.receive_data(&mut data).await.is_err() {
                    break;
                }
                let Ok(message) = serde_json::from_slice::<Value>(&data) else {
                    continue;
                };
                if let Some(id) = message.get("id").and_then(Value::as_u64) {
                    let reply = match message.get("error") {
                        Some(error) => Err(error.to_string()),
                        None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
                    };
                    if let Some(tx) = pending_rx.lock().unwrap().remove(&id) {
                        let _ = tx.send(reply);
                    }
                } else if let Some(line) = describe_event(&message) {
                    log_rx.lock().unwrap().push(line);
                }
            }
        });
        Browser {
            child,
            _profile: profile,
            sender: tokio::sync::Mutex::new(sender),
            pending,
            next_id: AtomicU64::new(1),
            log,
        }
    }

    /// Sends one CDP command (to a page when `session` is set) and waits for its answer.
    async fn command(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = session.into();
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        {
            let mut sender = self.sender.lock().await;
            sender
                .send_text(message.to_string())
                .await
                .expect("send to DevTools");
            sender.flush().await.expect("flush to DevTools");
        }
        match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(Ok(result))) => result,
            Ok(Ok(Err(error))) => panic!("{method} failed: {error}"),
            _ => panic!("{method}: no answer from the browser within 60 s"),
        }
    }

    /// A new tab showing `url`, with console output collected into `log`.
    pub async fn open(&self, url: &str) -> Page<'_> {
        let target = self
            .command(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = self
            .command(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        let session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        let page = Page {
            browser: self,
            session,
        };
        page.command("Runtime.enable", json!({})).await;
        page.command("Page.enable", json!({})).await;
        page.goto(url).await;
        page
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn describe_event(message: &Value) -> Option<String> {
    let params = message.get("params")?;
    match message.get("method")?.as_str()? {
        "Runtime.consoleAPICalled" => {
            let args: Vec<String> = params["args"]
                .as_array()?
                .iter()
                .map(|a| {
                    a.get("value")
                        .map(|v| v.to_string())
                        .or_else(|| a.get("description").map(|d| d.to_string()))
                        .unwrap_or_default()
                })
                .collect();
            Some(format!("console.{}: {}", params["type"], args.join(" ")))
        }
        "Runtime.exceptionThrown" => Some(format!(
            "exception: {}",
            params["exceptionDetails"]["exception"]["description"]
        )),
        _ => None,
    }
}

/// One tab.
pub struct Page<'a> {
    browser: &'a Browser,
    session: String,
}

impl Page<'_> {
    async fn command(&self, method: &str, params: Value) -> Value {
        self.browser
            .command(Some(&self.session), method, params)
            .await
    }

    /// Loads `url` and waits until its document has loaded.
    pub async fn goto(&self, url: &str) {
        let navigated = self.command("Page.navigate", json!({"url": url})).await;
        if let Some(error) = navigated.get("errorText").and_then(Value::as_str) {
            panic!("loading {url}: {error}");
        }
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(30),
        )
        .await;
    }

    /// Evaluates `expression` (awaiting it if it is a promise) and returns its JSON value.
    pub async fn eval(&self, expression: &str) -> Value {
        let result = self
            .command(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        if let Some(details) = result.get("exceptionDetails") {
            panic!(
                "evaluating `{expression}` threw: {}\nbrowser log:\n{}",
                details["exception"]["description"],
                self.browser.log_text()
            );
        }
        result["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Polls `expression` until it is truthy; returns its value. Panics with the browser's
    /// log after `limit`.
    pub async fn wait_for(&self, expression: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        let probe = format!(
            "(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()"
        );
        loop {
            let value = self.eval(&probe).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "waited {limit:?} for `{expression}`\npage text:\n{}\nbrowser log:\n{}",
                    self.eval("document.body ? document.body.innerText : ''")
                        .await,
                    self.browser.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the whole page (not only the viewport) to `path`.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let metrics = self.command("Page.getLayoutMetrics", json!({})).await;
        let size = &metrics["cssContentSize"];
        let (width, height) = (
            size["width"].as_f64().unwrap_or(1280.0),
            size["height"].as_f64().unwrap_or(900.0).min(8000.0),
        );
        let shot = self
            .command(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
                }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("png data"))
            .expect("base64 png");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

//! `init`, `run-node` and `dev`: the commands that create or run a node on this machine.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use onvm_node::identity::Identity;
use onvm_node::{CONFIG_FILE, Config, IDENTITY_FILE, Node, init_data_dir};

pub const PASSPHRASE_ENV: &str = "ONVM_IDENTITY_PASSPHRASE";

/// Config-affecting flags shared by `init`, `run-node` and `dev`.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub rpc: Option<SocketAddr>,
    pub listen: Option<SocketAddr>,
    pub offline: bool,
    pub relays: Vec<String>,
    pub relay_only: bool,
    pub set: Vec<String>,
    pub bootnodes: Vec<String>,
    pub no_auth: bool,
    /// `dev --allow-origin`: web origins admitted besides the node's own pages.
    pub allow_origins: Vec<String>,
}

impl Overrides {
    /// As `--set` items, applied after the file so flags win.
    fn as_set_items(&self) -> Vec<String> {
        let mut items = Vec::new();
        if self.no_auth {
            items.push("rpc.auth=false".into());
        }
        items.extend(self.set.iter().cloned());
        if let Some(rpc) = self.rpc {
            items.push(format!("rpc.listen=\"{rpc}\""));
        }
        if let Some(listen) = self.listen {
            items.push(format!("net.listen=\"{listen}\""));
        }
        if self.offline {
            items.push("net.offline=true".into());
        }
        if !self.relays.is_empty() {
            items.push(format!("net.relays={:?}", self.relays));
        }
        if self.relay_only {
            items.push("net.relay_only=true".into());
        }
        items
    }

    /// Config after applying these overrides; `--bootnode` adds to the configured list.
    fn config(&self, path: &Path) -> Result<Config> {
        let mut config = Config::load(path, &self.as_set_items())?;
        config.net.bootnodes.extend(self.bootnodes.iter().cloned());
        // `--offline` means loopback unless an address was chosen: an all-interfaces bind
        // would still expose the endpoint to the LAN.
        if self.offline && self.listen.is_none() && config.net.listen.ip().is_unspecified() {
            config
                .net
                .listen
                .set_ip(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        }
        Ok(config)
    }
}

fn passphrase_from_env() -> Option<String> {
    std::env::var(PASSPHRASE_ENV).ok().filter(|p| !p.is_empty())
}

pub fn init(data_dir: &Path, allow_plaintext: bool, overrides: &Overrides) -> Result<()> {
    let mut config = Config::from_toml("", "defaults", &overrides.as_set_items())?;
    config
        .net
        .bootnodes
        .extend(overrides.bootnodes.iter().cloned());
    let identity_exists = data_dir.join(IDENTITY_FILE).exists();
    let passphrase = if identity_exists {
        None
    } else if let Some(p) = passphrase_from_env() {
        Some(p)
    } else if allow_plaintext {
        None
    } else if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New identity passphrase: ")?;
        let second = rpassword::prompt_password("Repeat passphrase: ")?;
        if first != second {
            bail!("the passphrases do not match");
        }
        Some(first)
    } else {
        bail!(
            "no passphrase: set {PASSPHRASE_ENV}, run in a terminal to be prompted, or pass --allow-plaintext-identity"
        );
    };
    let outcome = init_data_dir(data_dir, &config, passphrase.as_deref(), allow_plaintext)
        .with_context(|| format!("initialising {}", data_dir.display()))?;
    let shown = data_dir.display();
    match (&outcome.endpoint_id, passphrase.is_some()) {
        (Some(id), true) => println!("created encrypted identity {id} in {shown}"),
        (Some(id), false) => println!("created PLAINTEXT identity {id} in {shown}"),
        (None, _) => println!("identity already exists in {shown}; kept it"),
    }
    if outcome.config_created {
        println!("wrote {}", data_dir.join(CONFIG_FILE).display());
    } else {
        println!(
            "{} already exists; kept it",
            data_dir.join(CONFIG_FILE).display()
        );
    }
    Ok(())
}

fn load_identity(data_dir: &Path) -> Result<Identity> {
    let path = data_dir.join(IDENTITY_FILE);
    let encrypted = Identity::is_encrypted(&path)?;
    let passphrase = if !encrypted {
        None
    } else if let Some(p) = passphrase_from_env() {
        Some(p)
    } else if std::io::stdin().is_terminal() {
        Some(rpassword::prompt_password("Identity passphrase: ")?)
    } else {
        None
    };
    Ok(Identity::load(&path, passphrase.as_deref())?)
}

pub async fn run_node(data_dir: &Path, overrides: &Overrides) -> Result<()> {
    let config = overrides.config(&data_dir.join(CONFIG_FILE))?;
    let node = start(data_dir, config, false).await?;
    serve_until_signal(vec![node]).await
}

/// Starts the node of `data_dir` and prints where it serves; `with_token`: the dashboard URL
/// carries the cookie secret (dev nodes only: run-node's output often goes to logs).
async fn start(data_dir: &Path, config: Config, with_token: bool) -> Result<Node> {
    let identity = load_identity(data_dir)?;
    let node = Node::start(data_dir, config, identity)
        .await
        .with_context(|| format!("starting the node in {}", data_dir.display()))?;
    let info = node.info();
    // A closed stdout (`onvm dev | head -2`) must not take the node down: ignore write errors.
    let banner = format!(
        "onvm node {}\nrpc:    {}\nweb:    {}\nticket: {}\ndata:   {}\n",
        info.endpoint_id,
        node.rpc_url(),
        node.dashboard_url(with_token),
        info.ticket,
        data_dir.display()
    );
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(banner.as_bytes())
        .and_then(|()| stdout.flush());
    Ok(node)
}

/// Runs until SIGINT/SIGTERM, then stops every node, the last started first.
async fn serve_until_signal(nodes: Vec<Node>) -> Result<()> {
    wait_for_signal().await?;
    let _ = writeln!(std::io::stderr(), "shutting down...");
    for node in nodes.into_iter().rev() {
        node.shutdown().await;
    }
    let _ = writeln!(std::io::stderr(), "stopped");
    Ok(())
}

/// The zero-config path: a plaintext dev identity and a loopback, offline node; with
/// `nodes > 1`, that many, joined to the first, in this one process (node i keeps its data in
/// `<data dir>-i` and serves RPC on the first node's port + i - 1).
pub async fn dev(data_dir: Option<PathBuf>, nodes: u32, overrides: &Overrides) -> Result<()> {
    let data_dir = match data_dir {
        Some(d) => d,
        None => default_dev_dir()?,
    };
    if nodes == 0 || nodes > MAX_DEV_NODES {
        bail!("--nodes must be 1..={MAX_DEV_NODES}");
    }
    let dev = dev_overrides(overrides);
    if let Some(rpc) = overrides.rpc
        && !rpc.ip().is_loopback()
    {
        bail!(
            "onvm dev serves loopback only (asked for {rpc}): use 127.0.0.1, or `onvm run-node` with tokens for anything other machines reach"
        );
    }
    eprintln!(
        "dev node: loopback only. The onvm CLI on this machine gets in through the cookie file; a browser needs the token in the dashboard URL below; web pages from other origins are refused unless named with --allow-origin."
    );
    let mut running: Vec<Node> = Vec::new();
    for i in 1..=nodes {
        let dir = if i == 1 {
            data_dir.clone()
        } else {
            let mut name = data_dir.clone().into_os_string();
            name.push(format!("-{i}"));
            PathBuf::from(name)
        };
        create_dev_dir(&dir)?;
        let mut config = dev.config(&dir.join(CONFIG_FILE))?;
        if !config.rpc.listen.ip().is_loopback() {
            bail!(
                "onvm dev serves loopback only, and {} sets rpc.listen = {}: use `onvm run-node` for that data dir",
                dir.display(),
                config.rpc.listen
            );
        }
        if let Some(first) = running.first() {
            let port = config.rpc.listen.port();
            if port != 0 {
                config.rpc.listen.set_port(port + (i - 1) as u16);
            }
            config.net.bootnodes.push(first.info().ticket);
        }
        match start(&dir, config, true).await {
            Ok(node) => running.push(node),
            Err(e) => {
                for node in running.into_iter().rev() {
                    node.shutdown().await;
                }
                return Err(e);
            }
        }
    }
    if nodes > 1 {
        eprintln!("{nodes} dev nodes joined into one network; Ctrl-C stops them all");
    }
    serve_until_signal(running).await
}

/// Most nodes `onvm dev --nodes` starts (each takes its own ports, files and memory).
const MAX_DEV_NODES: u32 = 16;

/// A dev node is for one developer's machine, locked like a Jupyter server: tokens on, so a web
/// page the developer happens to visit cannot use it; the CLI gets in through the cookie file
/// and the developer's browser through the token in the printed dashboard URL. Other web
/// origins only when named (`--allow-origin`; a page opened from disk is `null`).
fn dev_overrides(overrides: &Overrides) -> Overrides {
    let mut dev = overrides.clone();
    let origins = format!("rpc.allowed_origins={:?}", overrides.allow_origins);
    dev.set = std::iter::once(origins)
        .chain(overrides.set.iter().cloned())
        .collect();
    dev
}

fn create_dev_dir(data_dir: &Path) -> Result<()> {
    if !data_dir.join(IDENTITY_FILE).exists() {
        let mut dev_defaults = Config::default();
        dev_defaults.net.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        dev_defaults.net.offline = true;
        init_data_dir(data_dir, &dev_defaults, None, true)
            .with_context(|| format!("creating the dev node in {}", data_dir.display()))?;
        println!(
            "created dev node in {} (plaintext identity: for development only)",
            data_dir.display()
        );
    }
    Ok(())
}

fn default_dev_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("ONVM_DEV_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("onvm").join("dev"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/onvm/dev")),
        None => bail!("cannot pick a dev data dir: set ONVM_DEV_DIR or HOME, or pass --data-dir"),
    }
}

/// `onvm relay`: serves until SIGINT/SIGTERM. The URL goes to stdout (scripts read it), the
/// rest to the log.
pub async fn relay(options: onvm_node::relay::RelayOptions) -> Result<()> {
    let tls = options.tls.is_some();
    let token = options.token.is_some();
    let relay = onvm_node::relay::Relay::start(options).await?;
    println!("relay: {}", relay.url());
    if let Some(addr) = relay.metrics_addr() {
        tracing::info!("relay metrics at http://{addr}/metrics");
    }
    tracing::info!(
        url = %relay.url(),
        tls,
        token,
        "relay serving; give nodes --relay {} (net.relays){}",
        relay.url(),
        if token { " and the token (net.relay_token)" } else { "" }
    );
    wait_for_signal().await?;
    relay.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}

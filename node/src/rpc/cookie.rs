//! The cookie file: how the operator's own CLI gets every scope without a token. A running node
//! writes a fresh secret to `<runtime dir>/rpc-<port>.cookie` (mode 600, so only the user who
//! runs the node can read it) and removes it on shutdown; the CLI finds it by the port of the
//! RPC address it dials, as Jupyter finds its servers' runtime files, so several nodes on one
//! machine each have their own.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Env var that overrides the runtime dir (tests, or several users sharing a home).
pub const RUNTIME_DIR_ENV: &str = "ONVM_RUNTIME_DIR";

/// `$ONVM_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/onvm`, else `~/.local/share/onvm/runtime`.
pub fn runtime_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(RUNTIME_DIR_ENV).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("onvm"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".local/share/onvm/runtime"))
}

/// Where the node serving RPC on `port` keeps its cookie.
pub fn path_for(port: u16) -> Option<PathBuf> {
    runtime_dir().map(|dir| dir.join(format!("rpc-{port}.cookie")))
}

/// The cookie of the node serving RPC on `port` on this machine, if this user can read it.
pub fn read_for(port: u16) -> Option<String> {
    let text = std::fs::read_to_string(path_for(port)?).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// A cookie file that is removed when the node stops.
#[derive(Debug)]
pub struct Cookie {
    pub secret: String,
    pub path: PathBuf,
}

impl Cookie {
    /// Writes a fresh cookie for `port` (replacing a stale one left by a killed node).
    pub fn create(port: u16) -> std::io::Result<Self> {
        let path = path_for(port).ok_or_else(|| {
            std::io::Error::other(format!(
                "no runtime dir for the cookie file: set {RUNTIME_DIR_ENV} or HOME"
            ))
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut bytes = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut bytes);
        let secret = format!("onvm_cookie_{}", hex::encode(bytes));
        let tmp = dir.join(format!(".rpc-{port}.cookie.{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            options.mode(0o600);
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let mut file = options.open(&tmp)?;
        file.write_all(secret.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(Self { secret, path })
    }
}

impl Drop for Cookie {
    fn drop(&mut self) {
        // Only our own: a node started later on the same port has written its own secret.
        if std::fs::read_to_string(&self.path).is_ok_and(|s| s.trim() == self.secret) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

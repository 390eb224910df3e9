//! Log output for people: iroh reports every failed pkarr publish (the address directory a node
//! publishes to when it is not offline) at WARN with its DNS resolver's whole error, which
//! repeats the same failure once per nameserver, and again at every retry. Without a network
//! that buries the node's own lines, so the first failure is said once, briefly, with what it
//! means; `RUST_LOG=...` shows every line as iroh wrote it.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing::field::{Field, Visit};

const PKARR_TARGET: &str = "iroh::address_lookup::pkarr";

pub fn is_pkarr_warning(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with(PKARR_TARGET) && *meta.level() == tracing::Level::WARN
}

/// Says the first failed pkarr publish in one short line and drops the rest.
#[derive(Default)]
pub struct PkarrOnce(AtomicBool);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PkarrOnce {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if !is_pkarr_warning(event.metadata()) || self.0.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut reason = Reason(String::new());
        event.record(&mut reason);
        eprintln!(
            "WARN could not publish this node's address to the pkarr directory ({}); peers on this network can still dial it by ticket. Further failures are not shown (RUST_LOG=info shows them); --offline stops the attempts.",
            brief(&reason.0)
        );
    }
}

/// The error up to its list of per-nameserver repeats, at most 200 characters.
fn brief(error: &str) -> String {
    let head = error.split('[').next().unwrap_or(error).trim();
    let head = head.trim_end_matches(':').trim();
    let mut out: String = head.chars().take(200).collect();
    if head.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// The `err` field of the event (else its message).
struct Reason(String);

impl Visit for Reason {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "err" || (field.name() == "message" && self.0.is_empty()) {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "err" || (field.name() == "message" && self.0.is_empty()) {
            self.0 = value.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repeated_resolver_failures_are_cut_to_one_clause() {
        let error = "Error sending http request: dns error: no calls succeeded: [Resolve failed, IPv4: NXDOMAIN Resolve failed, IPv4: NXDOMAIN]";
        assert_eq!(
            brief(error),
            "Error sending http request: dns error: no calls succeeded"
        );
        assert!(brief(&"x".repeat(500)).chars().count() <= 201);
    }
}

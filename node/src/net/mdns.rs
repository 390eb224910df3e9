//! Optional LAN discovery (`net.mdns`): nodes advertise themselves with mDNS
//! (`iroh-mdns-address-lookup`) and dial the ONVM nodes they discover. Hellos still decide:
//! an endpoint on another network (or not an ONVM node at all) is not kept as a peer.

use std::sync::Arc;

use iroh_mdns_address_lookup::{DiscoveryEvent, MdnsAddressLookup};
use n0_future::StreamExt;

use super::Peers;

/// Starts advertising and looking up on the LAN; returns the task that dials what it finds.
pub(super) fn start(endpoint: &iroh::Endpoint, peers: Arc<Peers>) -> Result<(), String> {
    let mdns = MdnsAddressLookup::builder()
        .build(endpoint.id())
        .map_err(|e| format!("starting mDNS: {e}"))?;
    endpoint
        .address_lookup()
        .map_err(|e| e.to_string())?
        .add(mdns.clone());
    let tasks = peers.tasks.clone();
    tasks.spawn(async move {
        let mut events = mdns.subscribe().await;
        while let Some(event) = events.next().await {
            let DiscoveryEvent::Discovered { endpoint_info, .. } = event else {
                continue;
            };
            let addr = endpoint_info.into_endpoint_addr();
            if peers.is_known(&addr.id) || peers.is_banned(&addr.id) {
                continue;
            }
            let ticket = iroh_tickets::endpoint::EndpointTicket::new(addr).to_string();
            let peers = peers.clone();
            peers.tasks.clone().spawn(async move {
                match peers.connect(&ticket).await {
                    Ok(info) => {
                        tracing::info!(peer = %info.endpoint_id, "joined a peer found by mDNS")
                    }
                    Err(e) => tracing::debug!("a node found by mDNS: {e}"),
                }
            });
        }
    });
    Ok(())
}

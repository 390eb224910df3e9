//! Committee routing as pure code: which member a writing call (or a job) for a committee
//! program goes to, in which role, and which members are suspected dead. Time comes in as an
//! argument; the RPC layer (`rpc/routing.rs`) performs the forwards this plans, and the network
//! layer keeps the [`Suspicion`] table.

use std::collections::HashMap;

use onvm_rpc_api::Hash32;

/// In which role a member is asked to sequence a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The program's home, its normal sequencer.
    Home,
    /// A member that takes over because every member ranked before it failed to answer.
    Takeover,
}

/// One step of a call's route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// Forward the call to this member in this role; if it does not answer, go on.
    Forward { member: Hash32, role: Role },
    /// This node is the next member to try: sequence the call here (taking over).
    Local,
}

/// The order in which a writing call tries the members of `committee` (in rank order; the home
/// first): members not suspected first, then suspected ones, each in rank order. The route
/// stops at this node (`me`): a member never forwards past itself, it takes over. A committee
/// that is empty (a program of one node) is its `home` alone.
pub fn sequencer_route(
    committee: &[Hash32],
    home: Hash32,
    me: Hash32,
    is_suspected: impl Fn(&Hash32) -> bool,
) -> Vec<Hop> {
    let members: Vec<Hash32> = if committee.is_empty() {
        vec![home]
    } else {
        committee.to_vec()
    };
    let (live, suspected): (Vec<Hash32>, Vec<Hash32>) =
        members.into_iter().partition(|m| !is_suspected(m));
    let mut route = Vec::new();
    for member in live.into_iter().chain(suspected) {
        if member == me {
            route.push(Hop::Local);
            break;
        }
        let role = if member == home {
            Role::Home
        } else {
            Role::Takeover
        };
        route.push(Hop::Forward { member, role });
    }
    route
}

/// Members a forwarded call recently failed to reach, tried last for `suspect_for_ms` (config
/// `net.suspect_ms`) so writes go straight to the next live member instead of paying a dead
/// one's dial timeout again. A suspicion is this node's own (its call failed) or reported by
/// another node (gossip, so the network pays a dead member's dial timeout once, not once per
/// node). Only a report can be refuted by the member itself: this node's own failed call
/// stands until its window ends or the member answers it. Times are milliseconds on any
/// monotonic clock.
#[derive(Debug, Clone)]
pub struct Suspicion {
    suspect_for_ms: u64,
    since: HashMap<Hash32, Suspected>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Suspected {
    at_ms: u64,
    own: bool,
}

impl Suspicion {
    pub fn new(suspect_for_ms: u64) -> Self {
        Self {
            suspect_for_ms,
            since: HashMap::new(),
        }
    }

    /// A call to `member` failed at `now_ms`. True when it was not suspected before, so the
    /// news is worth telling other nodes.
    pub fn suspect(&mut self, member: Hash32, now_ms: u64) -> bool {
        let was = self.is_suspected(&member, now_ms);
        self.since.insert(
            member,
            Suspected {
                at_ms: now_ms,
                own: true,
            },
        );
        !was
    }

    /// Another node reported at `now_ms` that its call to `member` failed. An own suspicion
    /// stays own (a report does not make it refutable).
    pub fn reported(&mut self, member: Hash32, now_ms: u64) {
        let own = self.since.get(&member).is_some_and(|s| s.own);
        self.since.insert(member, Suspected { at_ms: now_ms, own });
    }

    /// `member` itself said it is alive: reports about it are dropped; this node's own
    /// failed call to it stands.
    pub fn refuted(&mut self, member: &Hash32) {
        if self.since.get(member).is_some_and(|s| !s.own) {
            self.since.remove(member);
        }
    }

    /// `member` answered: it is live again.
    pub fn clear(&mut self, member: &Hash32) {
        self.since.remove(member);
    }

    /// Whether a call to `member` failed within the last `suspect_for_ms`; forgets suspicions
    /// that expired (the table never outgrows the members that failed recently).
    pub fn is_suspected(&mut self, member: &Hash32, now_ms: u64) -> bool {
        let window = self.suspect_for_ms;
        self.since
            .retain(|_, s| now_ms.saturating_sub(s.at_ms) < window);
        self.since.contains_key(member)
    }

    /// Whether this node's own call to `member` failed within the last `suspect_for_ms`
    /// (reports from other nodes are not enough to skip a member outright).
    pub fn failed_here(&mut self, member: &Hash32, now_ms: u64) -> bool {
        self.is_suspected(member, now_ms) && self.since.get(member).is_some_and(|s| s.own)
    }

    /// How long a suspicion lasts (`net.suspect_ms`).
    pub fn window_ms(&self) -> u64 {
        self.suspect_for_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Hash32 {
        Hash32([n; 32])
    }

    fn forward(n: u8, role: Role) -> Hop {
        Hop::Forward {
            member: id(n),
            role,
        }
    }

    #[test]
    fn a_call_goes_to_the_home_then_the_members_in_rank_order_and_stops_at_this_node() {
        let committee = [id(1), id(2), id(3), id(4)];
        // A node outside the committee tries every member.
        assert_eq!(
            sequencer_route(&committee, id(1), id(9), |_| false),
            vec![
                forward(1, Role::Home),
                forward(2, Role::Takeover),
                forward(3, Role::Takeover),
                forward(4, Role::Takeover),
            ]
        );
        // Member 3 forwards to the home and member 2, then sequences itself.
        assert_eq!(
            sequencer_route(&committee, id(1), id(3), |_| false),
            vec![
                forward(1, Role::Home),
                forward(2, Role::Takeover),
                Hop::Local
            ]
        );
        // The home sequences at once.
        assert_eq!(
            sequencer_route(&committee, id(1), id(1), |_| false),
            vec![Hop::Local]
        );
    }

    #[test]
    fn suspected_members_are_tried_last_in_rank_order() {
        let committee = [id(1), id(2), id(3), id(4)];
        let down = |m: &Hash32| *m == id(1) || *m == id(3);
        assert_eq!(
            sequencer_route(&committee, id(1), id(9), down),
            vec![
                forward(2, Role::Takeover),
                forward(4, Role::Takeover),
                forward(1, Role::Home),
                forward(3, Role::Takeover),
            ]
        );
        // With the home suspected, member 2 takes over at once instead of waiting on it.
        assert_eq!(
            sequencer_route(&committee, id(1), id(2), down),
            vec![Hop::Local]
        );
        // Every member suspected: still all of them, in rank order (one may be back).
        assert_eq!(sequencer_route(&committee, id(1), id(9), |_| true).len(), 4);
    }

    #[test]
    fn a_program_of_one_node_routes_to_its_home_only() {
        assert_eq!(
            sequencer_route(&[], id(1), id(9), |_| false),
            vec![forward(1, Role::Home)]
        );
        assert_eq!(
            sequencer_route(&[], id(1), id(1), |_| true),
            vec![Hop::Local]
        );
    }

    #[test]
    fn suspicion_expires_after_its_window_and_clears_on_an_answer() {
        let mut s = Suspicion::new(10_000);
        assert!(!s.is_suspected(&id(1), 0));
        s.suspect(id(1), 1_000);
        s.suspect(id(2), 5_000);
        assert!(s.is_suspected(&id(1), 10_999));
        assert!(!s.is_suspected(&id(1), 11_000));
        assert!(s.is_suspected(&id(2), 11_000));
        s.clear(&id(2));
        assert!(!s.is_suspected(&id(2), 11_000));
        // A fresh failure restarts the window; expired entries are forgotten.
        s.suspect(id(1), 20_000);
        assert!(s.is_suspected(&id(1), 29_999));
        assert_eq!(s.since.len(), 1);
    }

    #[test]
    fn a_failure_is_news_once_and_reports_are_refuted_by_the_member_but_own_failures_are_not() {
        let mut s = Suspicion::new(10_000);
        // The first failure is worth telling; a repeat within the window is not.
        assert!(s.suspect(id(1), 0));
        assert!(!s.suspect(id(1), 100));
        // After the window it is news again.
        assert!(s.suspect(id(1), 10_100));
        // A report about another member: suspected, and its own "alive" clears it.
        s.reported(id(2), 10_100);
        assert!(s.is_suspected(&id(2), 10_200));
        assert!(!s.failed_here(&id(2), 10_200));
        assert!(s.failed_here(&id(1), 10_200));
        s.refuted(&id(2));
        assert!(!s.is_suspected(&id(2), 10_200));
        // Our own failed call stands against the member's word, even after a report renews it.
        s.reported(id(1), 10_200);
        s.refuted(&id(1));
        assert!(s.is_suspected(&id(1), 10_300));
        // An answer to our own call clears it.
        s.clear(&id(1));
        assert!(!s.is_suspected(&id(1), 10_300));
        s.reported(id(3), 20_000);
        assert!(s.is_suspected(&id(3), 29_999));
        assert!(!s.is_suspected(&id(3), 30_000));
    }
}

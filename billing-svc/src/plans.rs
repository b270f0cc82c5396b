//! Plans and what they allow. A Stripe subscription's plan is the one whose
//! price it is billed for (`CREWMESH_STRIPE_PRICES`); checkout metadata
//! names the plan too, but only to tell a person reading Stripe.

use std::time::Duration;

/// Every new tenant starts here.
pub const TRIAL: Plan = Plan {
    name: "trial",
    agent_quota: 2,
};
pub const TRIAL_LENGTH: Duration = Duration::from_secs(14 * 24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub name: &'static str,
    pub agent_quota: i32,
}

pub const PAID: [Plan; 3] = [
    Plan {
        name: "starter",
        agent_quota: 5,
    },
    Plan {
        name: "growth",
        agent_quota: 20,
    },
    Plan {
        name: "scale",
        agent_quota: 100,
    },
];

pub fn paid(name: &str) -> Option<Plan> {
    PAID.into_iter().find(|p| p.name == name)
}

/// Whether a subscription in `status` may add agents. Canceled, unpaid and
/// expired subscriptions may not; past_due keeps working during dunning.
pub fn status_allows_new_agents(status: &str) -> bool {
    matches!(status, "trialing" | "active" | "past_due")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        for ok in ["trialing", "active", "past_due"] {
            assert!(status_allows_new_agents(ok));
        }
        for no in [
            "canceled",
            "unpaid",
            "incomplete",
            "incomplete_expired",
            "paused",
        ] {
            assert!(!status_allows_new_agents(no));
        }
        assert_eq!(paid("growth").map(|p| p.agent_quota), Some(20));
        assert_eq!(paid("enterprise"), None);
    }
}

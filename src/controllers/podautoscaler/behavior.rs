//! How fast an autoscaler may move a workload: the stabilization window
//! (a recommendation must hold for the whole window before it is acted
//! on) and the rate policies (at most so many pods, or percent, per
//! period). Pure functions over the history the controller keeps.

use std::time::{Duration, Instant};

/// One direction's rules (`behavior.scaleUp` or `behavior.scaleDown`).
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub stabilization: Duration,
    pub select: Select,
    pub policies: Vec<Policy>,
}

/// Which policy wins when several allow different counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    /// The one allowing the largest change.
    Max,
    /// The one allowing the smallest change.
    Min,
    /// No change in this direction at all.
    Disabled,
}

/// One rate policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: i32,
    pub period: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

/// A past recommendation.
#[derive(Clone, Copy, Debug)]
pub struct Recommendation {
    pub at: Instant,
    pub replicas: i32,
}

/// A past change of the target's count (positive: up).
#[derive(Clone, Copy, Debug)]
pub struct ScaleEvent {
    pub at: Instant,
    pub change: i32,
}

/// The recommendation to act on: the lowest of the scale-up window (so a
/// spike must last before pods are added) and the highest of the
/// scale-down window (so a dip must last before pods go), bounded by the
/// current count from the side of each.
pub fn stabilize(
    now: Instant,
    current: i32,
    recommendation: i32,
    history: &[Recommendation],
    up: &Rules,
    down: &Rules,
) -> i32 {
    let within = |r: &&Recommendation, w: Duration| now.duration_since(r.at) <= w;
    let up_floor = history
        .iter()
        .filter(|r| within(r, up.stabilization))
        .map(|r| r.replicas)
        .fold(recommendation, i32::min);
    let down_ceiling = history
        .iter()
        .filter(|r| within(r, down.stabilization))
        .map(|r| r.replicas)
        .fold(recommendation, i32::max);
    let mut out = current;
    if out < up_floor {
        out = up_floor;
    }
    if out > down_ceiling {
        out = down_ceiling;
    }
    out
}

/// The most replicas the scale-up policies allow now.
pub fn scale_up_limit(now: Instant, current: i32, events: &[ScaleEvent], rules: &Rules) -> i32 {
    if rules.select == Select::Disabled {
        return current;
    }
    let limits = rules.policies.iter().map(|p| {
        let added: i32 = events
            .iter()
            .filter(|e| e.change > 0 && now.duration_since(e.at) <= p.period)
            .map(|e| e.change)
            .sum();
        let start = current - added;
        match p.kind {
            PolicyKind::Pods => start + p.value,
            PolicyKind::Percent => {
                (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
            }
        }
    });
    let limit = match rules.select {
        Select::Min => limits.min(),
        _ => limits.max(),
    };
    limit.unwrap_or(current).max(current)
}

/// The fewest replicas the scale-down policies allow now.
pub fn scale_down_limit(now: Instant, current: i32, events: &[ScaleEvent], rules: &Rules) -> i32 {
    if rules.select == Select::Disabled {
        return current;
    }
    let limits = rules.policies.iter().map(|p| {
        let removed: i32 = events
            .iter()
            .filter(|e| e.change < 0 && now.duration_since(e.at) <= p.period)
            .map(|e| -e.change)
            .sum();
        let start = current + removed;
        match p.kind {
            PolicyKind::Pods => start - p.value,
            PolicyKind::Percent => {
                (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)).floor() as i32
            }
        }
    });
    // The largest change is the lowest count.
    let limit = match rules.select {
        Select::Min => limits.max(),
        _ => limits.min(),
    };
    limit.unwrap_or(current).min(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(window: u64, select: Select, policies: &[(PolicyKind, i32, u64)]) -> Rules {
        Rules {
            stabilization: Duration::from_secs(window),
            select,
            policies: policies
                .iter()
                .map(|&(kind, value, period)| Policy {
                    kind,
                    value,
                    period: Duration::from_secs(period),
                })
                .collect(),
        }
    }

    #[test]
    fn a_dip_must_last_the_whole_scale_down_window() {
        let t0 = Instant::now();
        let up = rules(0, Select::Max, &[]);
        let down = rules(60, Select::Max, &[]);
        let history = [
            Recommendation {
                at: t0,
                replicas: 5,
            },
            Recommendation {
                at: t0 + Duration::from_secs(30),
                replicas: 2,
            },
        ];
        // At 50 s the 5 of t0 is still in the window: stay at 5.
        assert_eq!(
            stabilize(t0 + Duration::from_secs(50), 5, 1, &history, &up, &down),
            5
        );
        // At 70 s only the 2 remains: go to 2.
        assert_eq!(
            stabilize(t0 + Duration::from_secs(70), 5, 1, &history, &up, &down),
            2
        );
        // Scaling up is not held back with a zero window.
        assert_eq!(
            stabilize(t0 + Duration::from_secs(50), 5, 8, &history, &up, &down),
            8
        );
    }

    #[test]
    fn scale_up_is_limited_by_the_policy_that_allows_most() {
        let t0 = Instant::now();
        let r = rules(
            0,
            Select::Max,
            &[(PolicyKind::Pods, 4, 15), (PolicyKind::Percent, 100, 15)],
        );
        // From 1: +4 pods beats doubling.
        assert_eq!(scale_up_limit(t0, 1, &[], &r), 5);
        // From 10: doubling beats +4.
        assert_eq!(scale_up_limit(t0, 10, &[], &r), 20);
        // Pods added within the period count against it.
        let events = [ScaleEvent { at: t0, change: 4 }];
        assert_eq!(
            scale_up_limit(t0 + Duration::from_secs(5), 5, &events, &r),
            5 - 4 + 4
        );
        let min = Rules {
            select: Select::Min,
            ..r.clone()
        };
        assert_eq!(scale_up_limit(t0, 10, &[], &min), 14);
        let off = Rules {
            select: Select::Disabled,
            ..r
        };
        assert_eq!(scale_up_limit(t0, 10, &[], &off), 10);
    }

    #[test]
    fn scale_down_is_limited_per_period() {
        let t0 = Instant::now();
        let r = rules(0, Select::Max, &[(PolicyKind::Percent, 50, 60)]);
        assert_eq!(scale_down_limit(t0, 10, &[], &r), 5);
        // After halving, the period must pass before the next halving.
        let events = [ScaleEvent { at: t0, change: -5 }];
        assert_eq!(
            scale_down_limit(t0 + Duration::from_secs(10), 5, &events, &r),
            5
        );
        assert_eq!(
            scale_down_limit(t0 + Duration::from_secs(61), 5, &events, &r),
            2
        );
        // 100% allows zero at once.
        let all = rules(0, Select::Max, &[(PolicyKind::Percent, 100, 15)]);
        assert_eq!(scale_down_limit(t0, 3, &[], &all), 0);
    }
}

//! How many replicas one metric asks for: the arithmetic of the
//! autoscaling algorithm, kept free of I/O so each rule can be tested on
//! its own.
//!
//! `desired = ceil(current_value / target_value × pods)`, except that:
//! - a ratio within [`TOLERANCE`] of 1 keeps the current count (so noise
//!   does not make a workload flap);
//! - pods without a measurement yet count as using the target when the
//!   others say "scale down" and nothing when they say "scale up", and
//!   pods not ready count as using nothing when the others say "scale
//!   up": either way the guess can only damp the change, never cause one;
//! - if the damped ratio changes direction or falls within the tolerance,
//!   the count stays.

/// How far the usage ratio may stray from 1 before the count changes.
pub const TOLERANCE: f64 = 0.1;

/// One pod's measurement of a per-pod metric.
#[derive(Clone, Debug, PartialEq)]
pub enum PodSample {
    /// Ready, with a value (and, for utilization, its request).
    Ready { value: f64, request: f64 },
    /// Measured but not ready (still starting).
    Unready { value: f64, request: f64 },
    /// Running but not measured yet.
    Missing { request: f64 },
}

/// What a per-pod target compares against.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PodTarget {
    /// A percentage of the pods' summed requests.
    Utilization(f64),
    /// A value per pod.
    AverageValue(f64),
}

/// The outcome for one metric: the count it asks for, and the current
/// figure to report (utilization in percent, or the average per pod).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Proposal {
    pub replicas: i32,
    pub current: f64,
}

/// Why a per-pod metric gives no proposal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoProposal {
    #[error("no metrics returned from the metrics API")]
    NoMetrics,
    #[error("missing request for {0}")]
    MissingRequest(String),
}

fn ratio(samples: &[(f64, f64)], target: PodTarget) -> (f64, f64) {
    let used: f64 = samples.iter().map(|s| s.0).sum();
    match target {
        PodTarget::Utilization(t) => {
            let requested: f64 = samples.iter().map(|s| s.1).sum();
            let utilization = if requested > 0.0 {
                used * 100.0 / requested
            } else {
                0.0
            };
            (utilization / t, utilization)
        }
        PodTarget::AverageValue(t) => {
            let average = used / samples.len().max(1) as f64;
            (average / t, average)
        }
    }
}

/// The count a per-pod metric asks for, given the current count.
///
/// # Errors
/// No pod was measured.
pub fn per_pod(
    current: i32,
    pods: &[PodSample],
    target: PodTarget,
) -> Result<Proposal, NoProposal> {
    let ready: Vec<(f64, f64)> = pods
        .iter()
        .filter_map(|p| match p {
            PodSample::Ready { value, request } => Some((*value, *request)),
            _ => None,
        })
        .collect();
    let unready = pods
        .iter()
        .filter(|p| matches!(p, PodSample::Unready { .. }))
        .count();
    let missing: Vec<f64> = pods
        .iter()
        .filter_map(|p| match p {
            PodSample::Missing { request } => Some(*request),
            _ => None,
        })
        .collect();
    if ready.is_empty() && unready == 0 {
        return Err(NoProposal::NoMetrics);
    }
    // The ratio of the measured, ready pods alone (unready pods' figures
    // are not trusted: a starting guest's first requests are not its
    // steady state).
    let measured: Vec<(f64, f64)> = if ready.is_empty() {
        pods.iter()
            .filter_map(|p| match p {
                PodSample::Unready { value, request } => Some((*value, *request)),
                _ => None,
            })
            .collect()
    } else {
        ready.clone()
    };
    let (usage_ratio, current_figure) = ratio(&measured, target);
    let scale_up_with_unready = unready > 0 && usage_ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - usage_ratio).abs() <= TOLERANCE {
            return Ok(Proposal {
                replicas: current,
                current: current_figure,
            });
        }
        return Ok(Proposal {
            replicas: (usage_ratio * measured.len() as f64).ceil() as i32,
            current: current_figure,
        });
    }
    // Damp the change with guesses for the pods not counted.
    let mut damped = measured.clone();
    for request in &missing {
        let guess = if usage_ratio < 1.0 {
            match target {
                PodTarget::Utilization(_) => *request,
                PodTarget::AverageValue(t) => t,
            }
        } else {
            0.0
        };
        damped.push((guess, *request));
    }
    if scale_up_with_unready {
        for p in pods {
            if let PodSample::Unready { request, .. } = p {
                damped.push((0.0, *request));
            }
        }
    }
    let (new_ratio, _) = ratio(&damped, target);
    let flipped = (usage_ratio < 1.0 && new_ratio > 1.0) || (usage_ratio > 1.0 && new_ratio < 1.0);
    if (1.0 - new_ratio).abs() <= TOLERANCE || flipped {
        return Ok(Proposal {
            replicas: current,
            current: current_figure,
        });
    }
    let replicas = (new_ratio * damped.len() as f64).ceil() as i32;
    let backwards =
        (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current);
    Ok(Proposal {
        replicas: if backwards { current } else { replicas },
        current: current_figure,
    })
}

/// The count an object's metric asks for: `Value` compares the object's
/// value with the target and scales the ready pods by the ratio;
/// `AverageValue` divides the value among pods.
pub fn object(current: i32, ready_pods: i32, value: f64, target: ObjectTarget) -> Proposal {
    match target {
        ObjectTarget::Value(t) => {
            let usage_ratio = value / t;
            let replicas = if current == 0 {
                usage_ratio.ceil() as i32
            } else if (1.0 - usage_ratio).abs() <= TOLERANCE {
                current
            } else {
                (usage_ratio * f64::from(ready_pods)).ceil() as i32
            };
            Proposal {
                replicas,
                current: value,
            }
        }
        ObjectTarget::AverageValue(t) => {
            let usage_ratio = value / (t * f64::from(current.max(1)));
            let replicas = if (1.0 - usage_ratio).abs() <= TOLERANCE {
                current
            } else {
                (value / t).ceil() as i32
            };
            Proposal {
                replicas,
                current: value / f64::from(current.max(1)),
            }
        }
    }
}

/// What an object's target compares against.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ObjectTarget {
    Value(f64),
    AverageValue(f64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(value: f64, request: f64) -> PodSample {
        PodSample::Ready { value, request }
    }

    #[test]
    fn usage_over_target_scales_by_the_ratio() {
        // 3 pods at 90% of a 50% target: 1.8 × 3 = 5.4 → 6.
        let pods = [ready(90.0, 100.0), ready(90.0, 100.0), ready(90.0, 100.0)];
        let p = per_pod(3, &pods, PodTarget::Utilization(50.0)).unwrap();
        assert_eq!(p.replicas, 6);
        assert!((p.current - 90.0).abs() < 1e-9);
    }

    #[test]
    fn within_tolerance_the_count_stays() {
        let pods = [ready(54.0, 100.0), ready(54.0, 100.0)];
        assert_eq!(
            per_pod(2, &pods, PodTarget::Utilization(50.0))
                .unwrap()
                .replicas,
            2
        );
    }

    #[test]
    fn idle_pods_scale_in_and_a_zero_load_asks_for_zero() {
        let pods = [
            ready(10.0, 100.0),
            ready(10.0, 100.0),
            ready(10.0, 100.0),
            ready(10.0, 100.0),
        ];
        assert_eq!(
            per_pod(4, &pods, PodTarget::Utilization(50.0))
                .unwrap()
                .replicas,
            1
        );
        let idle = [ready(0.0, 0.0), ready(0.0, 0.0)];
        assert_eq!(
            per_pod(2, &idle, PodTarget::AverageValue(5.0))
                .unwrap()
                .replicas,
            0
        );
    }

    #[test]
    fn missing_pods_damp_a_scale_down_and_can_cancel_it() {
        // Two measured pods at 20% want 1 pod, but two unmeasured pods are
        // assumed at 100% of their request: (20+20+100+100)/4 = 60%, which
        // flips the direction: stay.
        let pods = [
            ready(20.0, 100.0),
            ready(20.0, 100.0),
            PodSample::Missing { request: 100.0 },
            PodSample::Missing { request: 100.0 },
        ];
        assert_eq!(
            per_pod(4, &pods, PodTarget::Utilization(50.0))
                .unwrap()
                .replicas,
            4
        );
    }

    #[test]
    fn unready_pods_count_as_idle_when_scaling_up() {
        // One ready pod at 200%: alone it asks for 4; with two starting
        // pods counted at 0 the ratio is 200/3/50 = 1.33 → ceil(4.0) = 4.
        let pods = [
            ready(200.0, 100.0),
            PodSample::Unready {
                value: 500.0,
                request: 100.0,
            },
            PodSample::Unready {
                value: 500.0,
                request: 100.0,
            },
        ];
        assert_eq!(
            per_pod(3, &pods, PodTarget::Utilization(50.0))
                .unwrap()
                .replicas,
            4
        );
    }

    #[test]
    fn no_measurement_is_no_proposal() {
        assert_eq!(
            per_pod(
                2,
                &[PodSample::Missing { request: 1.0 }],
                PodTarget::AverageValue(1.0)
            ),
            Err(NoProposal::NoMetrics)
        );
    }

    #[test]
    fn object_values_scale_the_ready_pods_or_divide_among_them() {
        // 30 in flight against 10 per target with 2 pods: ×3 → 6.
        assert_eq!(object(2, 2, 30.0, ObjectTarget::Value(10.0)).replicas, 6);
        // From zero, the ratio alone.
        assert_eq!(object(0, 0, 2.5, ObjectTarget::Value(1.0)).replicas, 3);
        // 30 spread at 10 per pod: 3.
        assert_eq!(
            object(2, 2, 30.0, ObjectTarget::AverageValue(10.0)).replicas,
            3
        );
        // Nothing at all asks for zero.
        assert_eq!(
            object(2, 2, 0.0, ObjectTarget::AverageValue(10.0)).replicas,
            0
        );
    }
}

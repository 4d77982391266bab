//! The status a pod worker reports: its own record of each container
//! (waiting/running/terminated, restarts, readiness) turned into the
//! Kubernetes `PodStatus` — phase, conditions, containerStatuses, IPs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::node::chrono_now;

/// A container's current state, as its status shows it.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Time,
    },
    Terminated(Terminated),
}

/// How a container run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Time>,
    pub finished_at: Time,
}

/// What the kubelet knows of one container.
#[derive(Clone, Debug)]
pub struct ContainerRecord {
    pub name: String,
    pub image: String,
    /// The digest it runs, once resolved.
    pub image_id: String,
    pub state: State,
    pub last_terminated: Option<Terminated>,
    pub restart_count: i32,
    pub ready: bool,
    /// Whether the startup probe passed (or there is none) while running.
    pub started: bool,
}

impl ContainerRecord {
    pub fn new(name: &str, image: &str) -> ContainerRecord {
        ContainerRecord {
            name: name.to_string(),
            image: image.to_string(),
            image_id: String::new(),
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last_terminated: None,
            restart_count: 0,
            ready: false,
            started: false,
        }
    }

    fn to_status(&self) -> ContainerStatus {
        let state = match &self.state {
            State::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..ContainerState::default()
            },
            State::Running { started_at } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(started_at.clone()),
                }),
                ..ContainerState::default()
            },
            State::Terminated(t) => ContainerState {
                terminated: Some(terminated(t)),
                ..ContainerState::default()
            },
        };
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            container_id: (!self.image_id.is_empty())
                .then(|| format!("wasm://{}/{}", self.name, self.restart_count)),
            state: Some(state),
            last_state: Some(ContainerState {
                terminated: self.last_terminated.as_ref().map(terminated),
                ..ContainerState::default()
            }),
            ready: self.ready,
            restart_count: self.restart_count,
            started: Some(matches!(self.state, State::Running { .. }) && self.started),
            ..ContainerStatus::default()
        }
    }
}

fn terminated(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.clone(),
        finished_at: Some(t.finished_at.clone()),
        ..ContainerStateTerminated::default()
    }
}

/// The pod's lifecycle phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// `restartPolicy` of the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn parse(s: Option<&str>) -> RestartPolicy {
        match s {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that ended with `exit_code` is started again.
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// Everything the kubelet reports about one pod.
#[derive(Clone, Debug)]
pub struct PodRecord {
    pub init: Vec<ContainerRecord>,
    pub main: Vec<ContainerRecord>,
    pub initialized: bool,
    /// Set when the pod reached a terminal phase on its own terms (all
    /// containers ended and will not restart, or a deadline passed).
    pub terminal: Option<(Phase, Option<String>, Option<String>)>,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub start_time: Time,
    /// Condition type → (status, last transition), so a transition time
    /// only moves when the status does.
    transitions: BTreeMap<&'static str, (bool, Time)>,
    /// The pod's restartPolicy: a container that ended and will be started
    /// again keeps the pod Running.
    restart_policy: RestartPolicy,
}

impl PodRecord {
    /// A record for `pod`, taking over what an earlier kubelet reported
    /// (IP, start time, restart counts, terminated containers).
    pub fn new(pod: &Pod, host_ip: String) -> PodRecord {
        let spec = pod.spec.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let take_over = |records: &mut Vec<ContainerRecord>, old: &Option<Vec<ContainerStatus>>| {
            for r in records.iter_mut() {
                if let Some(s) = old.iter().flatten().find(|s| s.name == r.name) {
                    r.restart_count = s.restart_count;
                    r.last_terminated = s
                        .last_state
                        .as_ref()
                        .and_then(|l| l.terminated.as_ref())
                        .map(from_terminated);
                    if let Some(t) = s.state.as_ref().and_then(|st| st.terminated.as_ref()) {
                        r.state = State::Terminated(from_terminated(t));
                    }
                    // A container an earlier kubelet ran keeps its start
                    // time when this one takes it back.
                    if let Some(started_at) = s
                        .state
                        .as_ref()
                        .and_then(|st| st.running.as_ref())
                        .and_then(|r| r.started_at.clone())
                    {
                        r.state = State::Running { started_at };
                    }
                }
            }
        };
        let mut init: Vec<ContainerRecord> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| ContainerRecord::new(&c.name, c.image.as_deref().unwrap_or_default()))
            .collect();
        let mut main: Vec<ContainerRecord> = spec
            .containers
            .iter()
            .map(|c| ContainerRecord::new(&c.name, c.image.as_deref().unwrap_or_default()))
            .collect();
        take_over(&mut init, &status.init_container_statuses);
        take_over(&mut main, &status.container_statuses);
        let initialized = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Initialized" && c.status == "True")
            || init.is_empty();
        let terminal = match status.phase.as_deref() {
            Some("Succeeded") => Some((
                Phase::Succeeded,
                status.reason.clone(),
                status.message.clone(),
            )),
            Some("Failed") => Some((Phase::Failed, status.reason.clone(), status.message.clone())),
            _ => None,
        };
        PodRecord {
            init,
            main,
            initialized,
            terminal,
            pod_ip: status.pod_ip.clone(),
            host_ip,
            start_time: status.start_time.unwrap_or_else(|| Time(chrono_now())),
            transitions: BTreeMap::new(),
            restart_policy: RestartPolicy::parse(spec.restart_policy.as_deref()),
        }
    }

    /// Kubernetes' phase rules: terminal once set; Pending until the init
    /// containers are done and every container has started once; Running
    /// while any runs or will restart; else Succeeded if all exited 0.
    pub fn phase(&self) -> Phase {
        if let Some((p, _, _)) = &self.terminal {
            return *p;
        }
        if !self.initialized {
            return Phase::Pending;
        }
        let mut running = 0;
        let mut waiting_fresh = 0;
        let mut terminated = 0;
        for c in &self.main {
            match &c.state {
                State::Running { .. } => running += 1,
                State::Waiting { .. } if c.restart_count == 0 && c.last_terminated.is_none() => {
                    waiting_fresh += 1
                }
                State::Waiting { .. } => running += 1,
                // Between its exit and its restart a container is still the
                // pod's running business (a pod never goes from Failed
                // back to Running).
                State::Terminated(t) if self.restart_policy.restarts(t.exit_code) => running += 1,
                State::Terminated(_) => terminated += 1,
            }
        }
        if waiting_fresh > 0 {
            Phase::Pending
        } else if running > 0 || terminated == 0 {
            Phase::Running
        } else if self
            .main
            .iter()
            .all(|c| matches!(&c.state, State::Terminated(t) if t.exit_code == 0))
        {
            Phase::Succeeded
        } else {
            Phase::Failed
        }
    }

    fn condition(&mut self, type_: &'static str, ok: bool, now: &Time) -> PodCondition {
        let entry = self
            .transitions
            .entry(type_)
            .or_insert_with(|| (ok, now.clone()));
        if entry.0 != ok {
            *entry = (ok, now.clone());
        }
        PodCondition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            last_transition_time: Some(entry.1.clone()),
            reason: match (type_, ok) {
                ("Initialized", false) => Some("ContainersNotInitialized".into()),
                ("ContainersReady" | "Ready", false) => {
                    if self.phase().is_terminal() {
                        Some("PodCompleted".into())
                    } else {
                        Some("ContainersNotReady".into())
                    }
                }
                _ => None,
            },
            message: None,
            ..PodCondition::default()
        }
    }

    /// The `status` to write.
    pub fn to_status(&mut self) -> PodStatus {
        let now = Time(chrono_now());
        let phase = self.phase();
        let ready =
            !phase.is_terminal() && !self.main.is_empty() && self.main.iter().all(|c| c.ready);
        let initialized = self.initialized;
        let conditions = vec![
            self.condition("PodReadyToStartContainers", true, &now),
            self.condition("Initialized", initialized, &now),
            self.condition("Ready", ready, &now),
            self.condition("ContainersReady", ready, &now),
            self.condition("PodScheduled", true, &now),
        ];
        let (reason, message) = match &self.terminal {
            Some((_, r, m)) => (r.clone(), m.clone()),
            None => (None, None),
        };
        PodStatus {
            phase: Some(phase.as_str().into()),
            conditions: Some(conditions),
            host_ip: Some(self.host_ip.clone()),
            host_ips: Some(vec![HostIP {
                ip: self.host_ip.clone(),
            }]),
            pod_ip: self.pod_ip.clone(),
            pod_ips: self
                .pod_ip
                .as_ref()
                .map(|ip| vec![PodIP { ip: ip.clone() }]),
            start_time: Some(self.start_time.clone()),
            init_container_statuses: (!self.init.is_empty())
                .then(|| self.init.iter().map(ContainerRecord::to_status).collect()),
            container_statuses: Some(self.main.iter().map(ContainerRecord::to_status).collect()),
            reason,
            message,
            ..PodStatus::default()
        }
    }
}

fn from_terminated(t: &ContainerStateTerminated) -> Terminated {
    Terminated {
        exit_code: t.exit_code,
        reason: t.reason.clone().unwrap_or_default(),
        message: t.message.clone(),
        started_at: t.started_at.clone(),
        finished_at: t.finished_at.clone().unwrap_or_else(|| Time(chrono_now())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn pod(containers: &[&str]) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: containers
                    .iter()
                    .map(|n| Container {
                        name: n.to_string(),
                        image: Some("hello".into()),
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn exited(code: i32) -> State {
        State::Terminated(Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: None,
            finished_at: Time(chrono_now()),
        })
    }

    #[test]
    fn a_new_pod_is_pending_then_running() {
        let mut r = PodRecord::new(&pod(&["a"]), "127.0.0.1".into());
        assert_eq!(r.phase(), Phase::Pending);
        r.main[0].state = State::Running {
            started_at: Time(chrono_now()),
        };
        assert_eq!(r.phase(), Phase::Running);
    }

    #[test]
    fn all_exited_zero_is_succeeded_any_failure_is_failed() {
        let mut p = pod(&["a", "b"]);
        p.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        let mut r = PodRecord::new(&p, "127.0.0.1".into());
        r.main[0].state = exited(0);
        r.main[1].state = exited(0);
        assert_eq!(r.phase(), Phase::Succeeded);
        r.main[1].state = exited(3);
        assert_eq!(r.phase(), Phase::Failed);
    }

    #[test]
    fn a_crash_looping_container_keeps_the_pod_running() {
        let mut r = PodRecord::new(&pod(&["a"]), "127.0.0.1".into());
        r.main[0].restart_count = 2;
        r.main[0].state = State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: None,
        };
        assert_eq!(r.phase(), Phase::Running);
    }

    #[test]
    fn a_container_that_exited_and_will_restart_keeps_the_pod_running() {
        for (policy, code, phase) in [
            ("Always", 0, Phase::Running),
            ("Always", 1, Phase::Running),
            ("OnFailure", 1, Phase::Running),
            ("OnFailure", 0, Phase::Succeeded),
            ("Never", 1, Phase::Failed),
        ] {
            let mut p = pod(&["a"]);
            p.spec.as_mut().unwrap().restart_policy = Some(policy.into());
            let mut r = PodRecord::new(&p, "127.0.0.1".into());
            r.main[0].restart_count = 1;
            r.main[0].state = exited(code);
            assert_eq!(r.phase(), phase, "{policy} exit {code}");
        }
    }

    #[test]
    fn restart_policies_match_kubernetes() {
        assert!(RestartPolicy::Always.restarts(0));
        assert!(!RestartPolicy::OnFailure.restarts(0));
        assert!(RestartPolicy::OnFailure.restarts(2));
        assert!(!RestartPolicy::Never.restarts(2));
        assert_eq!(RestartPolicy::parse(None), RestartPolicy::Always);
    }

    #[test]
    fn transition_times_move_only_when_the_condition_changes() {
        let mut r = PodRecord::new(&pod(&["a"]), "127.0.0.1".into());
        let first = r.to_status();
        let t0 = first.conditions.unwrap()[2].last_transition_time.clone();
        let again = r.to_status();
        assert_eq!(again.conditions.unwrap()[2].last_transition_time, t0);
    }
}

//! The scoring strategy and weights, from `--scheduler-strategy` or a
//! scheduler configuration file in Kubernetes' own format
//! (`KubeSchedulerConfiguration`, one profile), of which wkube reads:
//!
//! ```yaml
//! apiVersion: kubescheduler.config.k8s.io/v1
//! kind: KubeSchedulerConfiguration
//! profiles:
//! - schedulerName: default-scheduler
//!   plugins:
//!     score:
//!       enabled:
//!       - {name: NodeResourcesFit, weight: 1}
//!       - {name: NodeAffinity, weight: 2}
//!       - {name: NodeResourcesBalancedAllocation, weight: 1}
//!       disabled:                    # weight 0
//!       - {name: NodeResourcesBalancedAllocation}
//!   pluginConfig:
//!   - name: NodeResourcesFit
//!     args:
//!       scoringStrategy:
//!         type: MostAllocated        # or LeastAllocated, RequestedToCapacityRatio
//!         resources: [{name: cpu, weight: 1}, {name: memory, weight: 1}]
//!         requestedToCapacityRatio:
//!           shape: [{utilization: 0, score: 0}, {utilization: 100, score: 10}]
//! ```

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::Value;

/// The scheduler name pods ask for when they name none.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// How `NodeResourcesFit` scores a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StrategyType {
    /// Prefer the fullest node: bin-packing (wkube's default).
    #[default]
    MostAllocated,
    /// Prefer the emptiest node: spreading (Kubernetes' default).
    LeastAllocated,
    /// Score by a utilisation → score shape.
    RequestedToCapacityRatio,
}

impl FromStr for StrategyType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "MostAllocated" => Ok(StrategyType::MostAllocated),
            "LeastAllocated" => Ok(StrategyType::LeastAllocated),
            "RequestedToCapacityRatio" => Ok(StrategyType::RequestedToCapacityRatio),
            _ => Err(format!(
                "{s:?}: expected MostAllocated, LeastAllocated or RequestedToCapacityRatio"
            )),
        }
    }
}

/// A resource the score looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    Memory,
    Pods,
}

/// The strategy with its resource weights and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScoringStrategy {
    pub kind: StrategyType,
    /// Resources and their weights (default: cpu 1, memory 1).
    pub resources: Vec<(Resource, i64)>,
    /// `(utilization percent, score 0–10)` points, ascending, for
    /// `RequestedToCapacityRatio` (default: 0→0, 100→10).
    pub shape: Vec<(i64, i64)>,
}

impl Default for ScoringStrategy {
    fn default() -> Self {
        ScoringStrategy {
            kind: StrategyType::MostAllocated,
            resources: vec![(Resource::Cpu, 1), (Resource::Memory, 1)],
            shape: vec![(0, 0), (100, 10)],
        }
    }
}

/// What a configuration file sets; `None` leaves the default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileConfig {
    pub scheduler_name: Option<String>,
    pub strategy: Option<ScoringStrategy>,
    pub resources_fit_weight: Option<i64>,
    pub node_affinity_weight: Option<i64>,
    pub balanced_allocation_weight: Option<i64>,
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the scheduler configuration {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the scheduler configuration {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Reads a configuration file.
///
/// # Errors
/// The file cannot be read, is not YAML, or sets something wkube does not
/// understand (an unknown strategy or resource, a shape out of range).
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|message| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    })
}

/// Parses the text of a configuration file.
///
/// # Errors
/// A message naming the field that is wrong.
pub fn parse(text: &str) -> Result<FileConfig, String> {
    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != "KubeSchedulerConfiguration" {
        return Err(format!(
            "kind must be KubeSchedulerConfiguration, not {kind:?}"
        ));
    }
    let mut out = FileConfig::default();
    let profiles = doc.get("profiles").and_then(Value::as_array);
    let Some(profile) = profiles.and_then(|p| p.first()) else {
        return Ok(out);
    };
    if profiles.is_some_and(|p| p.len() > 1) {
        return Err("only one profile is supported".into());
    }
    out.scheduler_name = profile
        .get("schedulerName")
        .and_then(Value::as_str)
        .map(str::to_string);
    for p in profile
        .pointer("/plugins/score/enabled")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let weight = p.get("weight").and_then(Value::as_i64);
        *score_weight(&mut out, p)? = weight;
    }
    for p in profile
        .pointer("/plugins/score/disabled")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        *score_weight(&mut out, p)? = Some(0);
    }
    for pc in profile
        .get("pluginConfig")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if pc.get("name").and_then(Value::as_str) != Some("NodeResourcesFit") {
            continue;
        }
        let Some(s) = pc.pointer("/args/scoringStrategy") else {
            continue;
        };
        let mut strategy = ScoringStrategy::default();
        if let Some(t) = s.get("type").and_then(Value::as_str) {
            strategy.kind = t.parse()?;
        }
        if let Some(rs) = s.get("resources").and_then(Value::as_array) {
            strategy.resources = rs
                .iter()
                .map(|r| {
                    let name = r.get("name").and_then(Value::as_str).unwrap_or("");
                    let res = match name {
                        "cpu" => Resource::Cpu,
                        "memory" => Resource::Memory,
                        "pods" => Resource::Pods,
                        _ => {
                            return Err(format!(
                                "unknown resource {name:?} in scoringStrategy.resources"
                            ));
                        }
                    };
                    let w = r.get("weight").and_then(Value::as_i64).unwrap_or(1);
                    if !(1..=100).contains(&w) {
                        return Err(format!("weight of {name} must be in 1..=100"));
                    }
                    Ok((res, w))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(shape) = s
            .pointer("/requestedToCapacityRatio/shape")
            .and_then(Value::as_array)
        {
            let mut points = Vec::new();
            for p in shape {
                let u = p.get("utilization").and_then(Value::as_i64).unwrap_or(-1);
                let sc = p.get("score").and_then(Value::as_i64).unwrap_or(-1);
                if !(0..=100).contains(&u) || !(0..=10).contains(&sc) {
                    return Err("shape points need utilization 0..=100 and score 0..=10".into());
                }
                if points.last().is_some_and(|&(lu, _)| lu >= u) {
                    return Err("shape utilizations must increase".into());
                }
                points.push((u, sc));
            }
            if points.is_empty() {
                return Err("the shape needs at least one point".into());
            }
            strategy.shape = points;
        }
        out.strategy = Some(strategy);
    }
    Ok(out)
}

/// The weight a `plugins.score` entry (`{name: …}`) sets.
fn score_weight<'a>(out: &'a mut FileConfig, entry: &Value) -> Result<&'a mut Option<i64>, String> {
    match entry.get("name").and_then(Value::as_str) {
        Some("NodeResourcesFit") => Ok(&mut out.resources_fit_weight),
        Some("NodeAffinity") => Ok(&mut out.node_affinity_weight),
        Some("NodeResourcesBalancedAllocation") => Ok(&mut out.balanced_allocation_weight),
        other => Err(format!("unknown score plugin {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubernetes_scheduler_configuration_is_read() {
        let cfg = parse(
            r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: packer
  plugins:
    score:
      enabled:
      - {name: NodeResourcesFit, weight: 5}
      disabled:
      - {name: NodeResourcesBalancedAllocation}
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: RequestedToCapacityRatio
        resources: [{name: cpu, weight: 3}, {name: memory, weight: 1}]
        requestedToCapacityRatio:
          shape: [{utilization: 0, score: 10}, {utilization: 100, score: 0}]
"#,
        )
        .unwrap();
        assert_eq!(cfg.scheduler_name.as_deref(), Some("packer"));
        assert_eq!(cfg.resources_fit_weight, Some(5));
        assert_eq!(cfg.balanced_allocation_weight, Some(0));
        assert_eq!(
            cfg.strategy,
            Some(ScoringStrategy {
                kind: StrategyType::RequestedToCapacityRatio,
                resources: vec![(Resource::Cpu, 3), (Resource::Memory, 1)],
                shape: vec![(0, 10), (100, 0)],
            })
        );
    }

    #[test]
    fn mistakes_are_refused_with_the_field_named() {
        let cases = [
            ("kind: Other", "kind must be"),
            (
                "kind: KubeSchedulerConfiguration\nprofiles: [{pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {type: Spread}}}]}]",
                "expected MostAllocated",
            ),
            (
                "kind: KubeSchedulerConfiguration\nprofiles: [{pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {resources: [{name: gpu}]}}}]}]",
                "unknown resource",
            ),
            (
                "kind: KubeSchedulerConfiguration\nprofiles: [{pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {requestedToCapacityRatio: {shape: [{utilization: 50, score: 1}, {utilization: 10, score: 2}]}}}}]}]",
                "must increase",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}

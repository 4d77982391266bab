//! Gathers every node's stats summary for the metrics APIs.
//!
//! A list of PodMetrics asks every node's agent for its summary. To bound
//! what a caller can make the cluster do, one gathering serves every
//! request of the following [`FRESH`] (callers wait for the one in
//! progress rather than start their own), each agent gets [`NODE_TIMEOUT`]
//! and [`MAX_SUMMARY_BYTES`], and a node that does not answer is left out
//! of the result as a node without metrics, as it would be with no agent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;

use super::super::ApiState;
use super::super::status::ApiError;
use crate::agentapi::STATS_SUMMARY;
use crate::agentapi::client::AgentEndpoint;
use crate::agentapi::summary::Summary;
use crate::resources;

/// How long a gathering is reused.
pub const FRESH: Duration = Duration::from_secs(1);
/// How long one agent may take to send its summary.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest summary read from an agent (a node with 5,000 pods sends
/// about 3 MiB).
pub const MAX_SUMMARY_BYTES: usize = 32 << 20;

/// One gathering: the summary of each node that answered, with the Node
/// objects as they were listed.
#[derive(Debug, Default)]
pub struct Gathering {
    pub nodes: Vec<Value>,
    pub summaries: Vec<Summary>,
}

/// The last gathering, reused while fresh.
#[derive(Default)]
pub struct Collector {
    last: tokio::sync::Mutex<Option<(Instant, Arc<Gathering>)>>,
}

impl Collector {
    /// Every node's summary, at most [`FRESH`] old.
    ///
    /// # Errors
    /// When the Node list cannot be read.
    pub async fn gather(&self, state: &ApiState) -> Result<Arc<Gathering>, ApiError> {
        // Held across the gathering: concurrent callers wait for it and
        // then share its result.
        let mut last = self.last.lock().await;
        if let Some((at, g)) = last.as_ref()
            && at.elapsed() < FRESH
        {
            return Ok(g.clone());
        }
        let nodes_kind = resources::by_resource("", "v1", "nodes").ok_or(ApiError::NoRoute)?;
        let nodes = state
            .registry
            .list(nodes_kind, None, 0, None, &|_| true)
            .await?
            .items;
        let asks = nodes.iter().filter_map(|n| {
            let agent = AgentEndpoint::of_node(n).ok()?;
            Some(async move { ask(state, &agent).await })
        });
        let summaries = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        let g = Arc::new(Gathering { nodes, summaries });
        *last = Some((Instant::now(), g.clone()));
        Ok(g)
    }
}

/// One agent's summary, or `None` (logged) when it cannot be had.
async fn ask(state: &ApiState, agent: &AgentEndpoint) -> Option<Summary> {
    let read = async {
        let resp = state
            .nodes
            .send(
                agent,
                Method::GET,
                STATS_SUMMARY,
                HeaderMap::new(),
                Bytes::new(),
            )
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status()));
        }
        let body = http_body_util::Limited::new(resp.into_body(), MAX_SUMMARY_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        serde_json::from_slice::<Summary>(&body).map_err(|e| e.to_string())
    };
    match tokio::time::timeout(NODE_TIMEOUT, read).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(why)) => {
            tracing::debug!(node = %agent.node, %why, "no stats summary");
            None
        }
        Err(_) => {
            tracing::debug!(node = %agent.node, "stats summary timed out");
            None
        }
    }
}

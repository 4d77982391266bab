//! Builders for the API objects the tests create, as JSON. Each starts
//! from the smallest valid object and states nothing it was not told:
//! `PodBuilder::new(name)` has no containers and no `nodeName`, so a call
//! site says which containers it runs and whether the pod is already bound.

use serde_json::{Value, json};

use super::Kubectl;

/// A Pod: no containers and unbound until told otherwise.
pub struct PodBuilder {
    obj: Value,
}

impl PodBuilder {
    /// A pod with an empty containers list and no `nodeName`.
    pub fn new(name: &str) -> Self {
        PodBuilder {
            obj: json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name},
                "spec": {"containers": []},
            }),
        }
    }

    /// The pod's name.
    pub fn name(&self) -> &str {
        self.obj["metadata"]["name"].as_str().expect("a name")
    }

    /// Binds the pod to `node` (`spec.nodeName`).
    pub fn on_node(mut self, node: &str) -> Self {
        self.obj["spec"]["nodeName"] = json!(node);
        self
    }

    /// Adds a container running `image`.
    pub fn container(mut self, name: &str, image: &str) -> Self {
        self.containers()
            .push(json!({"name": name, "image": image}));
        self
    }

    /// Adds an init container running `image` with plain `env` values.
    pub fn init(mut self, name: &str, image: &str, env: &[(&str, &str)]) -> Self {
        let env: Vec<Value> = env
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
        let spec = self.obj["spec"].as_object_mut().unwrap();
        spec.entry("initContainers")
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .unwrap()
            .push(json!({"name": name, "image": image, "env": env}));
        self
    }

    fn containers(&mut self) -> &mut Vec<Value> {
        self.obj["spec"]["containers"].as_array_mut().unwrap()
    }

    /// Sets a field of the last container.
    pub fn last(mut self, field: &str, value: Value) -> Self {
        let c = self.containers().last_mut().expect("a container");
        c[field] = value;
        self
    }

    /// A containerPort on the last container.
    pub fn port(self, port: u16) -> Self {
        self.last("ports", json!([{"containerPort": port}]))
    }

    /// An env entry on the last container: a string is a `value`, anything
    /// else a `valueFrom`.
    pub fn env(mut self, name: &str, value: Value) -> Self {
        let c = self.containers().last_mut().expect("a container");
        let mut entry = json!({"name": name});
        match value {
            Value::String(s) => entry["value"] = json!(s),
            from => entry["valueFrom"] = from,
        }
        c.as_object_mut()
            .unwrap()
            .entry("env")
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .unwrap()
            .push(entry);
        self
    }

    /// Resource requests on the first container.
    pub fn requests(mut self, cpu: &str, memory: &str) -> Self {
        let c = self.containers().first_mut().expect("a container");
        c["resources"] = json!({"requests": {"cpu": cpu, "memory": memory}});
        self
    }

    /// Sets a field of the pod's spec.
    pub fn spec(mut self, field: &str, value: Value) -> Self {
        self.obj["spec"][field] = value;
        self
    }

    /// Adds a `nodeSelector` entry.
    pub fn node_selector(mut self, key: &str, value: &str) -> Self {
        self.obj["spec"]["nodeSelector"][key] = json!(value);
        self
    }

    /// Sets the pod's only toleration (operator `Equal`).
    pub fn toleration(mut self, key: &str, value: &str, effect: &str) -> Self {
        self.obj["spec"]["tolerations"] =
            json!([{"key": key, "operator": "Equal", "value": value, "effect": effect}]);
        self
    }

    /// Sets a required node affinity of one match expression.
    pub fn required_affinity(mut self, key: &str, op: &str, values: &[&str]) -> Self {
        self.obj["spec"]["affinity"] = json!({"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": key, "operator": op, "values": values}]}
        ]}}});
        self
    }

    /// Sets a preferred node affinity (weight 100) for `key` in `[value]`.
    pub fn preferred_affinity(mut self, key: &str, value: &str) -> Self {
        self.obj["spec"]["affinity"] = json!({"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [
                {"key": key, "operator": "In", "values": [value]}]}}
        ]}});
        self
    }

    /// The pod as JSON.
    pub fn json(&self) -> String {
        self.obj.to_string()
    }

    /// Creates the pod with `kubectl create -f -`.
    pub fn create(self, k: &Kubectl) {
        k.ok_with_stdin(&["create", "-f", "-"], &self.json());
    }
}

/// A Deployment of one `web` container whose pods carry `app: NAME`.
pub struct DeploymentBuilder {
    obj: Value,
}

impl DeploymentBuilder {
    /// One replica of `hello:v1`, labelled and selected by `app: NAME`.
    pub fn new(name: &str) -> Self {
        DeploymentBuilder {
            obj: json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "labels": {"app": name}},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "web", "image": "hello:v1"}]},
                    },
                },
            }),
        }
    }

    /// The image of the `web` container.
    pub fn image(mut self, image: &str) -> Self {
        self.obj["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
        self
    }

    /// `spec.replicas`.
    pub fn replicas(mut self, n: u32) -> Self {
        self.obj["spec"]["replicas"] = json!(n);
        self
    }

    /// Adds a `nodeSelector` entry to the pod template.
    pub fn node_selector(mut self, key: &str, value: &str) -> Self {
        self.obj["spec"]["template"]["spec"]["nodeSelector"][key] = json!(value);
        self
    }

    /// A containerPort named `http` on the `web` container, for a Service's
    /// `targetPort: http`.
    pub fn http_port(mut self, port: u16) -> Self {
        self.obj["spec"]["template"]["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": port, "name": "http"}]);
        self
    }

    /// The deployment as JSON.
    pub fn json(&self) -> String {
        self.obj.to_string()
    }
}

/// A ConfigMap with labels and data.
pub struct ConfigMapBuilder {
    obj: Value,
}

impl ConfigMapBuilder {
    /// A config map with no labels and empty data.
    pub fn new(name: &str) -> Self {
        ConfigMapBuilder {
            obj: json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": name}, "data": {}}),
        }
    }

    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.obj["metadata"]["labels"][k] = json!(v);
        self
    }

    /// Adds a data entry.
    pub fn data(mut self, k: &str, v: &str) -> Self {
        self.obj["data"][k] = json!(v);
        self
    }

    /// The config map as JSON.
    pub fn json(&self) -> String {
        self.obj.to_string()
    }
}

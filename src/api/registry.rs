//! Object storage over the cluster store, generic over kinds: keys under
//! `/registry/`, JSON values, `resourceVersion` = the key's mod revision,
//! and optimistic concurrency as compare-and-swap transactions. Values of
//! Secrets are sealed on the way in and opened on the way out (see
//! [`super::encryption`]); above the registry every value is plain.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde_json::Value;

use super::encryption::Keyring;
use super::status::ApiError;
use crate::resources::Kind;
use crate::store::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyRange, KeyValue, PutRequest,
    RangeRequest, Revision, Store, TxnOp, TxnOpResponse, TxnRequest,
};

/// Turns a stored key-value into a list item, or skips it.
type ItemMap<'a, T> = dyn Fn(&Arc<KeyValue>) -> Result<Option<T>, ApiError> + Send + Sync + 'a;

/// Where a list continues: the revision it was taken at and the next key.
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: Revision,
    start: String,
}

/// One page of a list.
pub struct ListPage<T = Value> {
    pub items: Vec<T>,
    /// The revision the list was taken at.
    pub revision: Revision,
    /// Set when more items follow.
    pub continue_token: Option<String>,
    /// How many items remain after this page, when known.
    pub remaining: Option<i64>,
}

/// Storage of API objects.
#[derive(Clone)]
pub struct Registry {
    store: Store,
    /// Seals Secrets at rest; `None` stores them as they are (unit tests).
    keyring: Option<Arc<Keyring>>,
}

/// Append a stored object's JSON to `out` with its `resourceVersion`
/// stamped in, without decoding it. Stored objects are serialized with
/// sorted keys and no `resourceVersion`, so the first `"metadata":{` is the
/// top-level one (only `apiVersion` and `kind` come before it).
pub fn write_stamped(kv: &KeyValue, out: &mut Vec<u8>) -> Result<(), ApiError> {
    write_stamped_at(kv, kv.mod_revision, out)
}

/// [`write_stamped_at`] for an object served as `kind`: a custom kind's
/// object stored in another version of it is rewritten (see
/// [`Kind::serve_as`]); every other is copied as stored.
pub fn write_served(
    kind: &Kind,
    kv: &KeyValue,
    rv: Revision,
    out: &mut Vec<u8>,
) -> Result<(), ApiError> {
    if kind.custom.is_some() {
        let want = format!("{{\"apiVersion\":\"{}\"", kind.api_version());
        if !kv.value.starts_with(want.as_bytes()) {
            let mut obj = decode(kv)?;
            kind.serve_as(&mut obj);
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
            }
            serde_json::to_writer(&mut *out, &obj).map_err(ApiError::internal)?;
            return Ok(());
        }
    }
    write_stamped_at(kv, rv, out)
}

/// [`write_stamped`] with a chosen `resourceVersion` (a deleted object
/// carries the revision of its deletion).
pub fn write_stamped_at(kv: &KeyValue, rv: Revision, out: &mut Vec<u8>) -> Result<(), ApiError> {
    const META: &[u8] = b"\"metadata\":{";
    let raw = &kv.value[..];
    let Some(at) = raw.windows(META.len()).position(|w| w == META) else {
        // Not in the expected shape: take the slow, exact path.
        let mut obj = decode(kv)?;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        serde_json::to_writer(&mut *out, &obj).map_err(ApiError::internal)?;
        return Ok(());
    };
    let split = at + META.len();
    out.extend_from_slice(&raw[..split]);
    out.extend_from_slice(b"\"resourceVersion\":\"");
    out.extend_from_slice(rv.to_string().as_bytes());
    out.extend_from_slice(b"\"");
    if raw.get(split) != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(&raw[split..]);
    Ok(())
}

/// Decode a stored value and stamp its `resourceVersion`.
pub fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("decoding stored object {:?}: {e}", kv.key)))?;
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(kv.mod_revision.to_string()),
        );
    }
    Ok(obj)
}

/// [`decode`] without `metadata.managedFields` and keeping only `fields`
/// besides `metadata` (see [`super::skim`]), for callers that only display
/// or select.
pub fn decode_skimmed(kv: &KeyValue, fields: super::skim::Fields) -> Result<Value, ApiError> {
    let mut obj = super::skim::decode_fields(&kv.value, fields)
        .map_err(|e| ApiError::internal(format!("decoding stored object {:?}: {e}", kv.key)))?;
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(kv.mod_revision.to_string()),
        );
    }
    Ok(obj)
}

fn encode(obj: &Value) -> Result<Bytes, ApiError> {
    serde_json::to_vec(&Unversioned(obj))
        .map(Bytes::from)
        .map_err(ApiError::internal)
}

/// Serializes an object without `metadata.resourceVersion`: the revision
/// is the store's business, so a stale copy is never stored. Written out
/// rather than cloned and trimmed, since every write passes here.
struct Unversioned<'a>(&'a Value);

impl serde::Serialize for Unversioned<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(top) = self.0 else {
            return self.0.serialize(s);
        };
        let mut out = s.serialize_map(Some(top.len()))?;
        for (k, v) in top {
            match v {
                Value::Object(meta) if k == "metadata" => {
                    out.serialize_entry(k, &WithoutRv(meta))?;
                }
                _ => out.serialize_entry(k, v)?,
            }
        }
        out.end()
    }
}

/// A `metadata` map without its `resourceVersion`.
struct WithoutRv<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for WithoutRv<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut out = s.serialize_map(None)?;
        for (k, v) in self.0 {
            if k != "resourceVersion" {
                out.serialize_entry(k, v)?;
            }
        }
        out.end()
    }
}

/// Sets `metadata.resourceVersion` of an object just written at `rev`.
pub fn stamp(obj: &mut Value, rev: Revision) {
    obj["metadata"]["resourceVersion"] = Value::String(rev.to_string());
}

/// Parse a `resourceVersion` string.
pub fn parse_rv(rv: &str) -> Result<Revision, ApiError> {
    rv.parse::<Revision>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {rv:?}")))
}

fn not_found(kind: &Kind, name: &str) -> ApiError {
    ApiError::NotFound {
        group: kind.group.to_string(),
        resource: kind.plural.to_string(),
        name: name.to_string(),
    }
}

fn conflict(kind: &Kind, name: &str) -> ApiError {
    ApiError::Conflict {
        group: kind.group.to_string(),
        resource: kind.plural.to_string(),
        name: name.to_string(),
        message: format!(
            "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
            kind.qualified_plural(),
            name
        ),
    }
}

impl Registry {
    /// A registry that stores every value as it is.
    pub fn new(store: Store) -> Self {
        Registry {
            store,
            keyring: None,
        }
    }

    /// A registry that seals Secrets with `keyring`.
    pub fn with_encryption(store: Store, keyring: Arc<Keyring>) -> Self {
        Registry {
            store,
            keyring: Some(keyring),
        }
    }

    /// The plain form of a stored key-value: borrowed unless it had to be
    /// opened.
    ///
    /// # Errors
    /// A sealed value that does not open (500, as Kubernetes answers).
    pub fn open<'a>(&self, kv: &'a KeyValue) -> Result<Cow<'a, KeyValue>, ApiError> {
        let Some(ring) = &self.keyring else {
            return Ok(Cow::Borrowed(kv));
        };
        match ring.open(&kv.key, &kv.value) {
            Ok(Cow::Borrowed(_)) => Ok(Cow::Borrowed(kv)),
            Ok(Cow::Owned(plain)) => Ok(Cow::Owned(KeyValue {
                value: Bytes::from(plain),
                ..kv.clone()
            })),
            Err(e) => Err(ApiError::internal(format!(
                "reading {}: {e}",
                String::from_utf8_lossy(&kv.key)
            ))),
        }
    }

    /// [`Registry::open`] for a shared key-value.
    pub fn open_arc(&self, kv: &Arc<KeyValue>) -> Result<Arc<KeyValue>, ApiError> {
        Ok(match self.open(kv)? {
            Cow::Borrowed(_) => kv.clone(),
            Cow::Owned(plain) => Arc::new(plain),
        })
    }

    /// A store event with its values opened.
    pub fn open_event<'a>(
        &self,
        ev: &'a crate::store::Event,
    ) -> Result<Cow<'a, crate::store::Event>, ApiError> {
        if self.keyring.is_none() || !super::encryption::is_sealed_key(&ev.kv.key) {
            return Ok(Cow::Borrowed(ev));
        }
        let prev_kv = ev.prev_kv.as_ref().map(|p| self.open_arc(p)).transpose()?;
        Ok(Cow::Owned(crate::store::Event {
            kind: ev.kind,
            kv: self.open_arc(&ev.kv)?,
            prev_kv,
        }))
    }

    /// Decode a stored value (opening it if sealed) and stamp its
    /// `resourceVersion`.
    pub fn decode(&self, kv: &KeyValue) -> Result<Value, ApiError> {
        decode(&*self.open(kv)?)
    }

    /// The bytes to store for `obj` under `key`.
    fn encode_for(&self, key: &[u8], obj: &Value) -> Result<Bytes, ApiError> {
        let plain = encode(obj)?;
        match &self.keyring {
            Some(ring) if super::encryption::is_sealed_key(key) => ring
                .seal(key, &plain)
                .map(Bytes::from)
                .map_err(ApiError::internal),
            _ => Ok(plain),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Read one object.
    pub async fn get(&self, kind: &Kind, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let key = kind.key(ns, name);
        let resp = self
            .store
            .range(RangeRequest {
                range: KeyRange::single(key),
                ..Default::default()
            })
            .await?;
        match resp.kvs.first() {
            Some(kv) => {
                let mut obj = self.decode(kv)?;
                kind.serve_as(&mut obj);
                Ok(obj)
            }
            None => Err(not_found(kind, name)),
        }
    }

    /// Read one object, `None` when absent.
    pub async fn try_get(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        match self.get(kind, ns, name).await {
            Ok(v) => Ok(Some(v)),
            Err(ApiError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Read just the fields of one object that `T` names (`None` when the
    /// object is absent), decoded straight from the stored bytes: for
    /// checks on hot paths that need one field, not the whole object.
    pub async fn peek<T: serde::de::DeserializeOwned>(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<T>, ApiError> {
        let resp = self
            .store
            .range(RangeRequest {
                range: KeyRange::single(kind.key(ns, name)),
                ..Default::default()
            })
            .await?;
        resp.kvs
            .first()
            .map(|kv| serde_json::from_slice(&self.open(kv)?.value).map_err(ApiError::internal))
            .transpose()
    }

    /// The current store revision.
    pub async fn revision(&self) -> Result<Revision, ApiError> {
        let resp = self
            .store
            .range(RangeRequest {
                range: KeyRange::single("/registry/"),
                count_only: true,
                ..Default::default()
            })
            .await?;
        Ok(resp.header.revision)
    }

    /// List objects of `kind` (in `ns`, or everywhere), `limit` at a time,
    /// keeping those `keep` accepts. A continue token pins the revision of
    /// the first page, so pages form one consistent snapshot.
    pub async fn list(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        limit: i64,
        continue_from: Option<&str>,
        keep: &(dyn Fn(&Value) -> bool + Send + Sync),
    ) -> Result<ListPage, ApiError> {
        self.list_with(kind, ns, limit, continue_from, &|kv| {
            let mut obj = self.decode(kv)?;
            kind.serve_as(&mut obj);
            Ok(keep(&obj).then_some(obj))
        })
        .await
    }

    /// Like [`Registry::list`] but hands out the stored key-values (opened
    /// when sealed), so a caller that only forwards them (a plain JSON
    /// list) skips decoding.
    pub async fn list_raw(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        limit: i64,
        continue_from: Option<&str>,
        keep: &(dyn Fn(&KeyValue) -> bool + Send + Sync),
    ) -> Result<ListPage<Arc<KeyValue>>, ApiError> {
        self.list_with(kind, ns, limit, continue_from, &|kv| {
            let kv = self.open_arc(kv)?;
            Ok(keep(&kv).then_some(kv))
        })
        .await
    }

    async fn list_with<T>(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        limit: i64,
        continue_from: Option<&str>,
        map: &ItemMap<'_, T>,
    ) -> Result<ListPage<T>, ApiError> {
        let prefix = match ns {
            Some(ns) if kind.namespaced => format!("{}{}/", kind.key_prefix(), ns),
            _ => kind.key_prefix(),
        };
        let range_end = crate::store::prefix_end(prefix.as_bytes());
        let (mut start, mut revision) = match continue_from {
            Some(token) => {
                let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(token)
                    .map_err(|_| ApiError::bad_request("invalid continue token"))?;
                let t: ContinueToken = serde_json::from_slice(&raw)
                    .map_err(|_| ApiError::bad_request("invalid continue token"))?;
                if !t.start.starts_with(&prefix) {
                    return Err(ApiError::bad_request("invalid continue token"));
                }
                (Bytes::from(t.start), t.rv)
            }
            None => (Bytes::from(prefix.clone()), 0),
        };
        let mut items = Vec::new();
        let want = if limit > 0 {
            limit as usize
        } else {
            usize::MAX
        };
        loop {
            let resp = self
                .store
                .range(RangeRequest {
                    range: KeyRange {
                        key: start.clone(),
                        range_end: range_end.clone(),
                    },
                    revision,
                    limit: if limit > 0 { (want - items.len()) as i64 } else { 0 },
                    ..Default::default()
                })
                .await
                .map_err(|e| match e {
                    crate::store::StoreError::Compacted { .. } => ApiError::Gone {
                        message: "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
                    },
                    e => e.into(),
                })?;
            if revision == 0 {
                revision = resp.header.revision;
            }
            let fetched = resp.kvs.len() as i64;
            for kv in &resp.kvs {
                if let Some(item) = map(kv)? {
                    items.push(item);
                }
            }
            let last_key = resp.kvs.last().map(|kv| kv.key.clone());
            let Some(last) = last_key.filter(|_| resp.more) else {
                return Ok(ListPage {
                    items,
                    revision,
                    continue_token: None,
                    remaining: None,
                });
            };
            let mut next = last.to_vec();
            next.push(0);
            start = Bytes::from(next);
            if items.len() >= want {
                let token = ContinueToken {
                    rv: revision,
                    start: String::from_utf8_lossy(&start).into_owned(),
                };
                let raw = serde_json::to_vec(&token).map_err(ApiError::internal)?;
                return Ok(ListPage {
                    items,
                    revision,
                    continue_token: Some(
                        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw),
                    ),
                    remaining: Some(resp.count - fetched),
                });
            }
        }
    }

    /// Store a new object and return a copy of it at its resourceVersion.
    /// Fails with `AlreadyExists` if the name is taken.
    pub async fn create(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        obj: &Value,
    ) -> Result<Value, ApiError> {
        let rev = self.insert(kind, ns, name, obj).await?;
        let mut out = obj.clone();
        stamp(&mut out, rev);
        Ok(out)
    }

    /// Store a new object; returns its revision, for a caller that keeps
    /// its own copy (see [`stamp`]). Fails with `AlreadyExists` if the name
    /// is taken.
    pub async fn insert(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        obj: &Value,
    ) -> Result<Revision, ApiError> {
        let key = Bytes::from(kind.key(ns, name));
        let value = self.encode_for(&key, &kind.store_as(obj))?;
        let resp = self
            .store
            .txn(TxnRequest {
                compare: vec![Compare {
                    range: KeyRange::single(key.clone()),
                    result: CompareResult::Equal,
                    target: CompareTarget::Create(0),
                }],
                success: vec![TxnOp::Put(PutRequest {
                    key,
                    value,
                    ..Default::default()
                })],
                failure: vec![],
            })
            .await?;
        if !resp.succeeded {
            return Err(ApiError::AlreadyExists {
                group: kind.group.to_string(),
                resource: kind.plural.to_string(),
                name: name.to_string(),
            });
        }
        Ok(resp.header.revision)
    }

    /// Replace an object if it is still at `expected` (its mod revision).
    pub async fn update(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        expected: Revision,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let key = Bytes::from(kind.key(ns, name));
        let put = TxnOp::Put(PutRequest {
            key: key.clone(),
            value: self.encode_for(&key, &kind.store_as(&obj))?,
            ..Default::default()
        });
        let resp = self
            .compare_and_swap(kind, name, key, expected, put)
            .await?;
        stamp(&mut obj, resp.header.revision);
        Ok(obj)
    }

    /// Remove an object if it is still at `expected`. Returns the removed
    /// object with its final resourceVersion (the delete's revision).
    pub async fn delete(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        expected: Revision,
    ) -> Result<Value, ApiError> {
        let key = Bytes::from(kind.key(ns, name));
        let delete = TxnOp::DeleteRange(DeleteRangeRequest {
            range: KeyRange::single(key.clone()),
            prev_kv: true,
        });
        let resp = self
            .compare_and_swap(kind, name, key, expected, delete)
            .await?;
        match resp.responses.first() {
            Some(TxnOpResponse::DeleteRange(d)) => match d.prev_kvs.first() {
                Some(prev) => {
                    let mut obj = self.decode(prev)?;
                    kind.serve_as(&mut obj);
                    obj["metadata"]["resourceVersion"] =
                        Value::String(resp.header.revision.to_string());
                    Ok(obj)
                }
                None => Err(not_found(kind, name)),
            },
            _ => Err(ApiError::internal("unexpected delete response")),
        }
    }

    /// Run `op` on `key` only if the key is still at mod revision
    /// `expected`; otherwise `Conflict` when it exists at another revision
    /// and `NotFound` when it is gone. The optimistic concurrency of every
    /// update and delete.
    async fn compare_and_swap(
        &self,
        kind: &Kind,
        name: &str,
        key: Bytes,
        expected: Revision,
        op: TxnOp,
    ) -> Result<crate::store::TxnResponse, ApiError> {
        let resp = self
            .store
            .txn(TxnRequest {
                compare: vec![Compare {
                    range: KeyRange::single(key.clone()),
                    result: CompareResult::Equal,
                    target: CompareTarget::Mod(expected),
                }],
                success: vec![op],
                failure: vec![TxnOp::Range(RangeRequest {
                    range: KeyRange::single(key),
                    keys_only: true,
                    ..Default::default()
                })],
            })
            .await?;
        if resp.succeeded {
            return Ok(resp);
        }
        let exists =
            matches!(resp.responses.first(), Some(TxnOpResponse::Range(r)) if !r.kvs.is_empty());
        Err(if exists {
            conflict(kind, name)
        } else {
            not_found(kind, name)
        })
    }

    /// Seals again every Secret stored in plaintext or with another key
    /// than the keyring's first (after encryption was turned on, or a key
    /// rotated). Each rewrite is conditional on the value not having
    /// changed meanwhile; a changed one was sealed by its writer. Returns
    /// how many were rewritten.
    ///
    /// # Errors
    /// The store fails.
    pub async fn reseal_secrets(&self) -> Result<usize, ApiError> {
        let Some(ring) = &self.keyring else {
            return Ok(0);
        };
        const PAGE: i64 = 256;
        let prefix = b"/registry/secrets/";
        let end = crate::store::prefix_end(prefix);
        let mut start = Bytes::from_static(prefix);
        let mut resealed = 0;
        loop {
            let resp = self
                .store
                .range(RangeRequest {
                    range: KeyRange {
                        key: start.clone(),
                        range_end: end.clone(),
                    },
                    limit: PAGE,
                    ..Default::default()
                })
                .await?;
            for kv in &resp.kvs {
                if !ring.needs_reseal(&kv.key, &kv.value) {
                    continue;
                }
                // One value that does not open (written through the etcd
                // API, or sealed with a key since removed) must not keep
                // the server from starting; reading it stays an error.
                let plain = match self.open(kv) {
                    Ok(plain) => plain,
                    Err(e) => {
                        tracing::warn!("not sealing again: {e:?}");
                        continue;
                    }
                };
                let sealed = ring
                    .seal(&kv.key, &plain.value)
                    .map_err(ApiError::internal)?;
                let done = self
                    .store
                    .txn(TxnRequest {
                        compare: vec![Compare {
                            range: KeyRange::single(kv.key.clone()),
                            result: CompareResult::Equal,
                            target: CompareTarget::Mod(kv.mod_revision),
                        }],
                        success: vec![TxnOp::Put(PutRequest {
                            key: kv.key.clone(),
                            value: Bytes::from(sealed),
                            lease: kv.lease,
                            ..Default::default()
                        })],
                        failure: vec![],
                    })
                    .await?;
                resealed += usize::from(done.succeeded);
            }
            match resp.kvs.last().filter(|_| resp.more) {
                Some(last) => {
                    let mut next = last.key.to_vec();
                    next.push(0);
                    start = Bytes::from(next);
                }
                None => return Ok(resealed),
            }
        }
    }

    /// Read-modify-write with retries on conflict: `f` changes the current
    /// object in place and says whether it changed anything (`false`
    /// writes nothing and returns the object as it was).
    pub async fn guaranteed_update<F>(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        mut f: F,
    ) -> Result<Value, ApiError>
    where
        F: FnMut(&mut Value) -> Result<bool, ApiError> + Send,
    {
        for _ in 0..16 {
            let mut current = self.get(kind, ns, name).await?;
            let rv = current
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(parse_rv)
                .transpose()?
                .unwrap_or(0);
            if !f(&mut current)? {
                return Ok(current);
            }
            match self.update(kind, ns, name, rv, current).await {
                Err(ApiError::Conflict { .. }) => continue,
                other => return other,
            }
        }
        Err(conflict(kind, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(value: &str, rev: i64) -> KeyValue {
        KeyValue {
            key: Bytes::from_static(b"/registry/pods/d/p"),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: 0,
        }
    }

    #[test]
    fn stored_bytes_never_carry_a_resource_version() {
        let obj = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "resourceVersion": "41", "uid": "u"},
            "spec": {"nodeName": "n", "resourceVersion": "kept: not metadata"},
        });
        let mut want = obj.clone();
        want["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        assert_eq!(encode(&obj).unwrap(), serde_json::to_vec(&want).unwrap());
        // Not an object, or metadata that is not a map: written as it is.
        for v in [
            serde_json::json!([1, 2]),
            serde_json::json!({"metadata": "x"}),
        ] {
            assert_eq!(encode(&v).unwrap(), serde_json::to_vec(&v).unwrap());
        }
    }

    #[test]
    fn stamping_raw_json_matches_decoding() {
        for stored in [
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"d"},"spec":{}}"#,
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{},"spec":{}}"#,
            r#"{"apiVersion":"v1","kind":"Pod","spec":{}}"#,
        ] {
            let kv = kv(stored, 42);
            let mut out = Vec::new();
            write_stamped(&kv, &mut out).unwrap();
            let fast: Value = serde_json::from_slice(&out).unwrap();
            let slow = decode(&kv).unwrap();
            assert_eq!(fast, slow, "{stored}");
        }
    }
}

//! The generic verbs over the registry: create, update and delete for
//! every kind, through validation, admission and finalizers. The HTTP
//! handlers, patch, subresources, the module registry and the join flow
//! call them; they know nothing of HTTP requests.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::ApiState;
use super::authn::UserInfo;
use super::managed::{self, Owner, Part};
use super::objects::{self, FieldValidation};
use super::registry::parse_rv;
use super::request::DeleteOptions;
use super::status::ApiError;
use crate::resources::Kind;

/// Create an object through every admission step; `owner` takes the
/// fields it set (managedFields).
#[allow(clippy::too_many_arguments)] // mirrors the REST verb's inputs
pub async fn create(
    state: &ApiState,
    user: &UserInfo,
    kind: &'static Kind,
    url_ns: Option<&str>,
    mut obj: Value,
    validation: FieldValidation,
    dry_run: bool,
    owner: Owner<'_>,
) -> Result<(Value, Vec<String>), ApiError> {
    if !kind.stored {
        return Err(ApiError::MethodNotAllowed);
    }
    let (ns, name) =
        objects::prepare_create(kind, url_ns, &mut obj, state.config.default_tolerations())?;
    if let Some(ns) = &ns {
        state.require_active_namespace(ns, kind, &name).await?;
    }
    let (mut obj, warnings) = objects::admit(kind, obj, validation)?;
    super::nodeauthz::admit(user, kind, None, &obj)?;
    super::escalation::check(state, user, kind, ns.as_deref(), None, &obj).await?;
    // LimitRange defaults and checks, then the quota charge: before any
    // address is allocated, so a refusal has nothing to give back.
    super::quota::admit_create(state, kind, ns.as_deref(), &mut obj, dry_run).await?;
    state.admission.on_create(state, kind, &mut obj).await?;
    if let Owner::Writer(manager) = owner {
        managed::record_update(kind, None, &mut obj, manager, Part::Main);
    }
    if dry_run {
        // Nothing is stored, so nothing may stay allocated either.
        state.admission.on_create_failed(state, kind, &obj).await;
        return Ok((obj, warnings));
    }
    match state
        .registry
        .insert(kind, ns.as_deref(), &name, &obj)
        .await
    {
        Ok(rev) => {
            super::registry::stamp(&mut obj, rev);
            Ok((obj, warnings))
        }
        Err(e) => {
            state.admission.on_create_failed(state, kind, &obj).await;
            Err(e)
        }
    }
}

/// Replace an object. `sub` is `Some("status")` for status writes;
/// `owner` takes the fields the write changes (managedFields). Returns
/// the stored object and 200 (or 201 when it was created, for kinds that
/// allow create-on-update).
#[allow(clippy::too_many_arguments)] // mirrors the REST verb's inputs
pub async fn update(
    state: &ApiState,
    user: &UserInfo,
    kind: &'static Kind,
    ns: Option<&str>,
    name: &str,
    new: Value,
    sub: Option<&str>,
    validation: FieldValidation,
    dry_run: bool,
    owner: Owner<'_>,
) -> Result<(Value, StatusCode, Vec<String>), ApiError> {
    let old = state.registry.get(kind, ns, name).await?;
    let expected = match objects::rv_of(&new) {
        Some(rv) => parse_rv(rv)?,
        // Built-in kinds allow unconditional updates.
        None => parse_rv(objects::rv_of(&old).unwrap_or("0"))?,
    };
    let mut new = new;
    objects::prepare_update(kind, &old, &mut new, sub)?;
    let (mut admitted, warnings) = objects::admit(kind, new, validation)?;
    objects::check_immutable(kind, &old, &admitted)?;
    super::nodeauthz::admit(user, kind, Some(&old), &admitted)?;
    super::escalation::check(state, user, kind, ns, Some(&old), &admitted).await?;
    objects::bump_generation(&old, &mut admitted);
    state
        .admission
        .on_update(state, kind, &old, &mut admitted)
        .await?;
    super::quota::admit_update(state, kind, ns, &old, &admitted, dry_run).await?;
    if let Owner::Writer(manager) = owner {
        managed::record_update(kind, Some(&old), &mut admitted, manager, Part::of(sub));
    }
    let unchanged = {
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            v
        };
        strip(&old) == strip(&admitted)
    };
    if dry_run {
        return Ok((admitted, StatusCode::OK, warnings));
    }
    if unchanged && objects::rv_of(&old) == Some(&expected.to_string()) {
        // A no-op update writes nothing and keeps the resourceVersion.
        return Ok((old, StatusCode::OK, warnings));
    }
    let stored = state
        .registry
        .update(kind, ns, name, expected, admitted)
        .await?;
    let stored = state.finish_if_deleting(kind, ns, name, stored).await?;
    Ok((stored, StatusCode::OK, warnings))
}

/// Delete one object, honouring finalizers and preconditions. Returns 200
/// with the object (gone, or marked for deletion while finalizers run).
pub async fn delete(
    state: &ApiState,
    kind: &'static Kind,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
    dry_run: bool,
) -> Result<(StatusCode, Value), ApiError> {
    for _ in 0..16 {
        let current = state.registry.get(kind, ns, name).await?;
        let stored_uid = current.pointer("/metadata/uid").and_then(Value::as_str);
        if let Some(uid) = &opts.precondition_uid
            && stored_uid != Some(uid.as_str())
        {
            return Err(ApiError::uid_precondition(
                kind,
                name,
                uid,
                stored_uid.unwrap_or(""),
            ));
        }
        let rv = parse_rv(objects::rv_of(&current).unwrap_or("0"))?;
        if let Some(want) = &opts.precondition_rv
            && *want != rv.to_string()
        {
            return Err(ApiError::Conflict {
                group: kind.group.into(),
                resource: kind.plural.into(),
                name: name.into(),
                message: format!(
                    "Operation cannot be fulfilled on {} \"{}\": Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {}",
                    kind.qualified_plural(),
                    name,
                    want,
                    rv
                ),
            });
        }
        if dry_run {
            return Ok((StatusCode::OK, current));
        }
        let mut marked = current.clone();
        let needs_mark = state.admission.on_delete(kind, &mut marked, opts).await?;
        let has_finalizers = marked
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers || needs_mark {
            if marked.pointer("/metadata/deletionTimestamp").is_none() {
                marked["metadata"]["deletionTimestamp"] = json!(objects::now_rfc3339());
                marked["metadata"]["deletionGracePeriodSeconds"] =
                    json!(opts.grace_period.unwrap_or(0));
            }
            if marked == current {
                return Ok((StatusCode::OK, current));
            }
            match state.registry.update(kind, ns, name, rv, marked).await {
                // Foreground and orphan deletions finish once the garbage
                // collector has deleted or released the dependents and
                // cleared its finalizer.
                Ok(stored) => return Ok((StatusCode::OK, stored)),
                Err(ApiError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        match state.registry.delete(kind, ns, name, rv).await {
            Ok(gone) => {
                // The garbage collector sees it go and collects its
                // dependents.
                state.admission.on_deleted(state, kind, &gone).await;
                return Ok((StatusCode::OK, gone));
            }
            Err(ApiError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::Conflict {
        group: kind.group.into(),
        resource: kind.plural.into(),
        name: name.into(),
        message: format!(
            "Operation cannot be fulfilled on {} \"{}\": too many concurrent changes",
            kind.qualified_plural(),
            name
        ),
    })
}

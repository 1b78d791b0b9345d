//! AlterUserScramCredentials and DescribeUserScramCredentials (KIP-554):
//! SCRAM users in the metadata log, as `kafka-configs.sh --entity-type
//! users` and Kafka's Admin API manage them.
//!
//! A client sends the salt and the salted password (never the password);
//! the controller stores the salt, iterations, stored key and server key.
//! Every user of a request gets its own answer: duplicates (one user and
//! mechanism twice) are DUPLICATE_RESOURCE, too few or too many
//! iterations or a malformed salted password UNACCEPTABLE_CREDENTIAL, an
//! unknown mechanism UNSUPPORTED_SASL_MECHANISM, deleting or describing a
//! credential that does not exist RESOURCE_NOT_FOUND. The valid changes go
//! to the controller together.

use super::{Ctx, HandlerError, Reply};
use crate::cluster::rpc::Request;
use crate::metadata::Snapshot;
use crate::security::acl::Operation;
use crate::security::sasl::scram::{
    ScramCredential, ScramMechanism, ITERATIONS_MAX, ITERATIONS_MIN,
};
use crate::shard::controller;
use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;
use std::collections::{BTreeMap, BTreeSet};

type Refusal = (ErrorCode, String);

/// Users in the order the request first names them, each with its first
/// refusal, if any.
struct PerUser {
    order: Vec<String>,
    refused: BTreeMap<String, Refusal>,
}

impl PerUser {
    fn note(&mut self, user: &str) {
        if !self.order.iter().any(|u| u == user) {
            self.order.push(user.to_string());
        }
    }

    fn refuse(&mut self, user: &str, code: ErrorCode, message: impl Into<String>) {
        self.note(user);
        self.refused
            .entry(user.to_string())
            .or_insert((code, message.into()));
    }
}

fn mechanism(code: i8) -> Result<ScramMechanism, Refusal> {
    ScramMechanism::from_code(code).ok_or((
        ErrorCode::UnsupportedSaslMechanism,
        format!("Unknown SCRAM mechanism type {code}"),
    ))
}

fn check_upsertion(
    u: &alter_user_scram_credentials_request::ScramCredentialUpsertion,
) -> Result<(ScramMechanism, ScramCredential), Refusal> {
    let m = mechanism(u.mechanism)?;
    let unacceptable = |why: &str| (ErrorCode::UnacceptableCredential, why.to_string());
    if u.iterations < ITERATIONS_MIN {
        return Err(unacceptable("Too few iterations"));
    }
    if u.iterations > ITERATIONS_MAX {
        return Err(unacceptable("Too many iterations"));
    }
    if u.salt.is_empty() {
        return Err(unacceptable("Salt must not be empty"));
    }
    let credential =
        ScramCredential::from_salted(m, u.salt.to_vec(), u.iterations, &u.salted_password);
    let hash_len = credential.stored_key.len();
    if u.salted_password.len() != hash_len {
        return Err(unacceptable("The salted password has the wrong length"));
    }
    Ok((m, credential))
}

/// The changes of a request that pass every check, and each user's
/// first refusal.
struct Changes {
    per_user: PerUser,
    deletions: Vec<(String, ScramMechanism)>,
    upsertions: Vec<(String, ScramMechanism, ScramCredential)>,
}

fn sort_changes(req: &AlterUserScramCredentialsRequest, existing: &Snapshot) -> Changes {
    let mut per_user = PerUser {
        order: Vec::new(),
        refused: BTreeMap::new(),
    };
    let mut seen = BTreeSet::new();
    let named = req
        .deletions
        .iter()
        .map(|d| (d.name.as_str(), d.mechanism))
        .chain(
            req.upsertions
                .iter()
                .map(|u| (u.name.as_str(), u.mechanism)),
        );
    for (user, mech) in named {
        per_user.note(user);
        if user.is_empty() {
            per_user.refuse(
                user,
                ErrorCode::UnacceptableCredential,
                "Username must not be empty",
            );
        } else if !seen.insert((user.to_string(), mech)) {
            per_user.refuse(
                user,
                ErrorCode::DuplicateResource,
                "A user credential cannot be altered twice in the same request",
            );
        }
    }
    let mut deletions = Vec::new();
    for d in &req.deletions {
        match mechanism(d.mechanism) {
            Err((code, message)) => per_user.refuse(&d.name, code, message),
            Ok(m) if !existing.scram.contains_key(&(d.name.to_string(), m)) => per_user.refuse(
                &d.name,
                ErrorCode::ResourceNotFound,
                "Attempt to delete a user credential that does not exist",
            ),
            Ok(m) => deletions.push((d.name.to_string(), m)),
        }
    }
    let mut upsertions = Vec::new();
    for u in &req.upsertions {
        match check_upsertion(u) {
            Err((code, message)) => per_user.refuse(&u.name, code, message),
            Ok((m, credential)) => upsertions.push((u.name.to_string(), m, credential)),
        }
    }
    // A user with any refused change keeps all of its credentials as they are.
    deletions.retain(|(user, _)| !per_user.refused.contains_key(user));
    upsertions.retain(|(user, _, _)| !per_user.refused.contains_key(user));
    Changes {
        per_user,
        deletions,
        upsertions,
    }
}

pub async fn alter(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: AlterUserScramCredentialsRequest = ctx.decode(body)?;
    if !ctx.cluster_allowed(Operation::Alter) {
        // As Kafka: every user named gets CLUSTER_AUTHORIZATION_FAILED.
        let mut users: Vec<String> = Vec::new();
        let named = req
            .deletions
            .iter()
            .map(|d| d.name.to_string())
            .chain(req.upsertions.iter().map(|u| u.name.to_string()));
        for user in named {
            if !users.contains(&user) {
                users.push(user);
            }
        }
        let results = users
            .into_iter()
            .map(|user| {
                AlterUserScramCredentialsResult::default()
                    .with_user(StrBytes::from_string(user))
                    .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
            })
            .collect();
        return ctx.respond(&AlterUserScramCredentialsResponse::default().with_results(results));
    }
    let Changes {
        mut per_user,
        deletions,
        upsertions,
    } = sort_changes(&req, &ctx.shard.metadata());
    let changed: BTreeSet<String> = deletions
        .iter()
        .map(|(u, _)| u.clone())
        .chain(upsertions.iter().map(|(u, _, _)| u.clone()))
        .collect();
    if !changed.is_empty() {
        let req = Request::AlterScramCredentials {
            upsertions,
            deletions,
            if_absent: false,
        };
        if let Err((code, message)) = controller::change(ctx.shard, req).await {
            for user in &changed {
                per_user.refuse(user, code, message.clone());
            }
        }
    }
    let results = per_user
        .order
        .iter()
        .map(|user| {
            let (code, message) = match per_user.refused.get(user) {
                Some((code, message)) => (*code, Some(StrBytes::from_string(message.clone()))),
                None => (ErrorCode::None, None),
            };
            AlterUserScramCredentialsResult::default()
                .with_user(StrBytes::from_string(user.clone()))
                .with_error_code(code.code())
                .with_error_message(message)
        })
        .collect();
    ctx.respond(&AlterUserScramCredentialsResponse::default().with_results(results))
}

pub fn describe(ctx: &Ctx<'_>, body: Bytes) -> Result<Reply, HandlerError> {
    let req: DescribeUserScramCredentialsRequest = ctx.decode(body)?;
    if !ctx.cluster_allowed(Operation::Describe) {
        return ctx.respond(
            &DescribeUserScramCredentialsResponse::default()
                .with_error_code(ErrorCode::ClusterAuthorizationFailed.code()),
        );
    }
    let snapshot = ctx.shard.metadata();
    let mut by_user: BTreeMap<&str, Vec<CredentialInfo>> = BTreeMap::new();
    for ((user, m), c) in &snapshot.scram {
        by_user.entry(user).or_default().push(
            CredentialInfo::default()
                .with_mechanism(m.code())
                .with_iterations(c.iterations),
        );
    }
    let found = |user: &str, infos: Vec<CredentialInfo>| {
        DescribeUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.to_string()))
            .with_credential_infos(infos)
    };
    let refused = |user: &str, code: ErrorCode, message: &str| {
        DescribeUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.to_string()))
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message.to_string())))
    };
    let results = match req.users.filter(|u| !u.is_empty()) {
        None => by_user
            .iter()
            .map(|(user, infos)| found(user, infos.clone()))
            .collect(),
        Some(users) => {
            let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
            let mut seen = BTreeSet::new();
            let mut results = Vec::new();
            for name in &names {
                if names.iter().filter(|n| *n == name).count() > 1 {
                    if seen.insert(*name) {
                        results.push(refused(name, ErrorCode::DuplicateResource, "Cannot describe SCRAM credentials for the same user twice in a single request"));
                    }
                    continue;
                }
                results.push(match by_user.get(name) {
                    Some(infos) => found(name, infos.clone()),
                    None => refused(
                        name,
                        ErrorCode::ResourceNotFound,
                        "Attempt to describe a user credential that does not exist",
                    ),
                });
            }
            results
        }
    };
    ctx.respond(&DescribeUserScramCredentialsResponse::default().with_results(results))
}

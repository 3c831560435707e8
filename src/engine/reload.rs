//! Live reload ([`Engine::reload`]): a new configuration replaces the clients, users, signing
//! keys, limits and channel of a running engine. Everything that holds state stays: pending
//! requests, held polls, sessions, rate-limit cells (all in the store, which is not rebuilt) and
//! connections (the runtime's).
//!
//! A file is taken whole or not at all: it must pass the checks `ciba-gateway check` runs, and
//! it must not change what only a restart can (listener, store, endpoints, upstream, …); a
//! refusal names each problem by its field path and leaves the running configuration in force.

use std::sync::Arc;

use super::backchannel::Limits;
use super::{Engine, take};
use crate::channel::Channel;
use crate::config::{Config, ConfigError, ConfigErrors};
use crate::tokens::{KeySet, Minter};
use crate::users::UserDirectory;

/// What an accepted reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reloaded {
    /// The sections that changed (`clients`, `users`, `tokens`, `limits`, `channel`, `ciba`);
    /// empty when the file was the same.
    pub changed: Vec<&'static str>,
    /// Signing keys the reload retired (taken out of `tokens.keys`): still published until
    /// the tokens they signed have expired.
    pub retired_kids: Vec<String>,
}

/// The settings a reload may change; everything else needs a restart.
pub const RELOADABLE: &str = "clients, users, tokens.keys, tokens.active_kid, \
    tokens.id_token_ttl_secs, tokens.access_token_ttl_secs, tokens.access_token_audience, \
    limits, channel, ciba.max_held_polls, ciba.max_held_polls_per_client";

impl Engine {
    /// Replaces the reloadable parts of the running configuration ([`RELOADABLE`]) with
    /// `next`'s, or refuses `next` whole with every problem (the messages `ciba-gateway check`
    /// prints, and one per setting that only a restart can change). Pending requests, held
    /// polls, sessions and rate-limit budgets carry on; a poll held across the reload answers
    /// with what it started with.
    ///
    /// A key taken out of `tokens.keys` is retired, not forgotten: the JWKS keeps it until the
    /// access and ID tokens it signed have expired, and the gateway accepts the refresh tokens
    /// it signed until those have. Without configured keys the ephemeral key is kept.
    ///
    /// Blocking: what is replaced is freed here once the requests still using it are done
    /// (a second at most), never by a request; from async code, call it in
    /// `tokio::task::spawn_blocking`.
    pub fn reload(&self, next: Config) -> Result<Reloaded, ConfigErrors> {
        // One at a time (a SIGHUP and a `POST /reload`, or an application's threads): each
        // compares with, and retires keys from, what the previous one left.
        let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = self.try_reload(next);
        match &outcome {
            Ok(r) => crate::audit::reloaded(r),
            Err(problems) => crate::audit::reload_refused(problems),
        }
        outcome
    }

    fn try_reload(&self, next: Config) -> Result<Reloaded, ConfigErrors> {
        let current = self.cfg.current();
        let mut problems = next.validate();
        problems.extend(restart_only_changes(&current, &next));
        let keys = if next.tokens.keys.is_empty() && current.tokens.keys.is_empty() {
            Some(self.minter.get().keys().clone())
        } else {
            take(&mut problems, KeySet::from_config(&next.tokens))
        };
        // What new keys may not change of the running ones (the guard goes before `replace`).
        if let Some(k) = &keys {
            let minter = self.minter.get();
            let running = minter.keys();
            for kid in k.reused_kids(running) {
                problems.push(ConfigError::new(
                    "tokens.keys",
                    format!(
                        "kid '{kid}' named another key before the reload: give a new key a \
                         new kid, or the tokens the old one signed stop verifying (the running \
                         keys stay)"
                    ),
                ));
            }
            if k.algorithms() != running.algorithms() {
                // Discovery advertises them, and registered clients were checked against them.
                problems.push(ConfigError::new(
                    "tokens.keys",
                    "the reload changes the set of signing algorithms, which only a restart can \
                     (the running keys stay)",
                ));
            }
        }
        let clients = take(&mut problems, self.clients.reconfigured(&next));
        let users = take(
            &mut problems,
            UserDirectory::rebuilt(&next.users, Some(&self.users.get())),
        );
        let channel = take(
            &mut problems,
            Channel::from_config(&next.channel, &self.issuer, Arc::clone(&self.clock)),
        );
        let (Some(keys), Some(clients), Some(users), Some(mut channel)) =
            (keys, clients, users, channel)
        else {
            return Err(ConfigErrors(problems));
        };
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }

        let changed = sections(&current, &next);
        let now = self.clock.now_secs();
        let before = &current.tokens;
        // Tokens signed before the reload were signed under its lifetimes.
        let published = before.access_token_ttl_secs.max(before.id_token_ttl_secs);
        let kept = published.max(before.refresh_token_ttl_secs);
        // Nothing is held of what is replaced (each replacement waits for its readers).
        drop(current);
        let keys = keys.retiring(self.minter.get().keys(), now, published, kept);
        let retired_kids = keys
            .retired_kids()
            .filter(|k| !self.minter.get().keys().is_retired(k))
            .map(str::to_owned)
            .collect();
        self.minter
            .replace(Minter::new(keys, self.issuer.clone(), &next.tokens));
        self.clients.replace_configured(clients);
        self.users.replace(users);
        // Bearer tokens given to the authenticator live as long as their requests at most.
        channel.adopt(
            &self.channel.get(),
            now,
            u64::from(next.ciba.max_expiry_secs),
        );
        self.channel.replace(channel);
        self.backchannel
            .limits
            .replace(Limits::from_parts(&self.clock, &self.store, &next.limits));
        self.token.held.set_budgets(
            next.ciba.held_polls_cap(&next.server),
            next.ciba.max_held_polls_per_client,
        );
        self.cfg.replace(next);
        Ok(Reloaded {
            changed,
            retired_kids,
        })
    }
}

/// `next` with the reloadable settings of `from` (what is left differs only where a restart
/// is needed).
fn pinned(next: &Config, from: &Config) -> Config {
    let mut c = next.clone();
    c.clients.clone_from(&from.clients);
    c.users.clone_from(&from.users);
    c.channel.clone_from(&from.channel);
    c.limits.clone_from(&from.limits);
    c.ciba.max_held_polls = from.ciba.max_held_polls;
    c.ciba.max_held_polls_per_client = from.ciba.max_held_polls_per_client;
    let (t, f) = (&mut c.tokens, &from.tokens);
    t.keys.clone_from(&f.keys);
    t.active_kid.clone_from(&f.active_kid);
    t.id_token_ttl_secs = f.id_token_ttl_secs;
    t.access_token_ttl_secs = f.access_token_ttl_secs;
    t.access_token_audience.clone_from(&f.access_token_audience);
    c
}

/// The names of the top-level fields in which `a` and `b` differ.
macro_rules! differing {
    ($a:expr, $b:expr; $($field:ident),* $(,)?) => {{
        let mut v: Vec<&'static str> = Vec::new();
        $( if $a.$field != $b.$field { v.push(stringify!($field)); } )*
        v
    }};
}

fn sections(a: &Config, b: &Config) -> Vec<&'static str> {
    differing!(a, b; listen, public_url, issuer, endpoints, limits, ciba, store, channel, users,
        clients, registration, tokens, scopes_supported, upstream, runtime, tls, server,
        approval, profile, mtls, log, admin, audit, trace)
}

/// One problem per section `next` changes that only a restart can change.
fn restart_only_changes(current: &Config, next: &Config) -> Vec<ConfigError> {
    let pinned = pinned(next, current);
    if pinned == *current {
        return Vec::new();
    }
    let mut fields = sections(current, &pinned);
    if fields.is_empty() {
        // A field missing from `sections`: still refused, if less precisely.
        fields.push("");
    }
    fields
        .into_iter()
        .map(|f| {
            ConfigError::new(
                f,
                format!(
                    "only a restart can change this (the running value stays); a reload \
                     changes {RELOADABLE}"
                ),
            )
        })
        .collect()
}

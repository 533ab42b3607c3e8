//! Answers one decoded request from the local store.
//!
//! Synchronous on purpose: every store call is a short critical section, so a
//! pipeline of requests is answered in one pass over the read buffer and no
//! lock is ever held across an `.await`.

use std::sync::atomic::Ordering;

use protocol::{
    ArithOp, Command, Error, Hit, OutBuf, Reply, Request, Response, StoreMode, Value, ZERO_COPY_MIN,
};
use store::{ArithOutcome, DeleteOutcome, Found, StoreOutcome};
use tracing::warn;

use crate::Node;
use crate::metrics::{self, Cmd, Metrics};

/// What the connection does after a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    Continue,
    /// Write what is pending, then close (quit).
    Close,
    /// Discard this many bytes of input first: the payload of a value too
    /// large to buffer.
    Swallow(usize),
}

/// The version string clients see: memcached's protocol level, then ours.
pub(crate) const VERSION: &str = concat!("1.6.18-shoal-", env!("CARGO_PKG_VERSION"));

/// The only SASL mechanism offered.
const SASL_MECHS: &str = "PLAIN";

/// Answers `request` (whose metrics label is `cmd`) into `out`.
pub(crate) fn execute(node: &Node, cmd: Cmd, request: &Request<'_>, out: &mut OutBuf) -> After {
    let reply = &request.reply;
    let metrics = node.metrics.as_ref();
    // Local stores and hits count their key families themselves.
    let mut answer = |response: Response<'_>| metrics::encode(metrics, cmd, reply, &response, out);
    let store = &node.store;
    let counters = &node.counters;
    match &request.command {
        Command::Get { keys, touch } => {
            let now = store.now();
            for key in keys.iter() {
                counters.cmd_get.fetch_add(1, Ordering::Relaxed);
                let found = match touch {
                    Some(exptime) => {
                        counters.cmd_touch.fetch_add(1, Ordering::Relaxed);
                        store.get_and_touch(key, *exptime)
                    }
                    None => store.get(key),
                };
                match &found {
                    Some(found) => answer(hit(metrics, key, found, now)),
                    None => answer(Response::Miss { key }),
                }
            }
            answer(Response::End);
        }
        Command::Store {
            mode,
            key,
            flags,
            exptime,
            value,
            cas,
        } => {
            counters.cmd_set.fetch_add(1, Ordering::Relaxed);
            let mode = match mode {
                StoreMode::Set => store::Mode::Set,
                StoreMode::Add => store::Mode::Add,
                StoreMode::Replace => store::Mode::Replace,
                StoreMode::Append => store::Mode::Append,
                StoreMode::Prepend => store::Mode::Prepend,
            };
            // The key's family, worked out once per key and kept on its item.
            let tag = || metrics.map_or(0, |m| m.tag_for(key));
            answer(
                match store.store_tagged(mode, key, value, *flags, *exptime, *cas, tag) {
                    Ok((StoreOutcome::Stored { cas }, tag)) => {
                        if let Some(m) = metrics {
                            m.stored(tag, key, value.len());
                        }
                        Response::Stored { cas }
                    }
                    Ok((StoreOutcome::NotStored, _)) => Response::NotStored,
                    Ok((StoreOutcome::Exists, _)) => Response::Exists,
                    Ok((StoreOutcome::NotFound, _)) => Response::NotFound,
                    Err(e) => Response::Error(store_error(e)),
                },
            );
        }
        Command::TooLarge {
            mode,
            key,
            cas,
            swallow,
        } => {
            counters.cmd_set.fetch_add(1, Ordering::Relaxed);
            if *mode == StoreMode::Set && *cas == 0 {
                store.remove(key);
            }
            answer(Response::Error(Error::TooLarge));
            return After::Swallow(*swallow);
        }
        Command::Delete { key, cas } => answer(match store.delete(key, *cas) {
            DeleteOutcome::Deleted => Response::Deleted,
            DeleteOutcome::NotFound => Response::NotFound,
            DeleteOutcome::Exists => Response::Exists,
        }),
        Command::Arith {
            key,
            op,
            delta,
            vivify,
            cas,
        } => {
            let op = match op {
                ArithOp::Incr => store::ArithOp::Incr,
                ArithOp::Decr => store::ArithOp::Decr,
            };
            let vivify = vivify.map(|v| (v.initial, v.exptime));
            answer(match store.arith(key, op, *delta, vivify, *cas) {
                Ok(ArithOutcome::Value { value, cas }) => Response::Number { value, cas },
                Ok(ArithOutcome::NotFound) => Response::NotFound,
                Ok(ArithOutcome::Exists) => Response::Exists,
                Err(e) => Response::Error(store_error(e)),
            });
        }
        Command::Touch { key, exptime } => {
            counters.cmd_touch.fetch_add(1, Ordering::Relaxed);
            answer(match store.get_and_touch(key, *exptime) {
                Some(found) => Response::Touched {
                    flags: found.item.flags(),
                    cas: found.item.cas(),
                },
                None => Response::NotFound,
            });
        }
        Command::FlushAll { delay } => {
            if node.settings.disable_flush {
                answer(Response::Error(Error::FlushDisabled));
            } else {
                counters.cmd_flush.fetch_add(1, Ordering::Relaxed);
                store.flush_all(*delay);
                answer(Response::Ok);
            }
        }
        Command::Stats { group } => match crate::stats::group(node, group) {
            Some(lines) => {
                for (name, value) in &lines {
                    answer(Response::Stat { name, value });
                }
                answer(Response::End);
            }
            None => answer(Response::Error(Error::UnknownCommand)),
        },
        Command::Version => answer(Response::Version(VERSION)),
        Command::Verbosity { .. } | Command::Noop => answer(Response::Ok),
        Command::Quit => {
            answer(Response::Ok);
            return After::Close;
        }
        Command::MetaDebug { key } => match store.get(key) {
            Some(found) => {
                let item = &found.item;
                let fields = format!(
                    "exp={} la={} cas={} fetch={} cls=1 size={}",
                    item.ttl(store.now()),
                    found.last_access,
                    item.cas(),
                    if found.fetched { "yes" } else { "no" },
                    item.total_size(),
                );
                answer(Response::Debug {
                    key,
                    fields: &fields,
                });
            }
            None => answer(Response::Miss { key }),
        },
        Command::SaslListMechs => answer(Response::SaslMechs(SASL_MECHS)),
        Command::SaslAuth { .. } | Command::SaslStep { .. } => {
            counters.auth_cmds.fetch_add(1, Ordering::Relaxed);
            if !node.warned_auth_off.swap(true, Ordering::Relaxed) {
                warn!(
                    "a client authenticated with SASL, but auth is not configured: accepting any credentials"
                );
            }
            answer(Response::AuthOk);
        }
    }
    match reply {
        Reply::Text(_) | Reply::Meta(_) | Reply::Binary(_) => After::Continue,
    }
}

/// A get's answer for one found local item, its key family counted (see
/// [`Metrics::local_hit`]). Large values are handed on as shared `Bytes`
/// over the item itself, so they reach the socket without a copy.
pub(crate) fn hit<'a>(
    metrics: Option<&Metrics>,
    key: &'a [u8],
    found: &'a Found,
    now: u32,
) -> Response<'a> {
    if let Some(m) = metrics {
        m.local_hit(&found.item);
    }
    let item = &found.item;
    let value = if item.value().len() >= ZERO_COPY_MIN {
        Value::Shared(item.value_bytes())
    } else {
        Value::Slice(item.value())
    };
    Response::Hit(Hit {
        key,
        flags: item.flags(),
        cas: item.cas(),
        value,
        ttl: item.ttl(now),
        last_access: found.last_access,
        fetched: found.fetched,
    })
}

fn store_error(e: store::Error) -> Error {
    match e {
        store::Error::TooLarge => Error::TooLarge,
        store::Error::OutOfMemory => Error::OutOfMemory,
        store::Error::NonNumeric => Error::NonNumeric,
    }
}

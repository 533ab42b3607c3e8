//! One client connection: read, answer every whole request, write once.
//!
//! Requests are decoded straight out of the read buffer; a pipeline of them
//! is answered in one pass and the answers leave in one vectored write, so a
//! client sending 16 gets at once costs one read and one write.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Buf, Bytes, BytesMut};
use protocol::{Command, Decode, OutBuf, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::debug;

use crate::Node;
use crate::exec::{self, After};
use crate::forward::{self, Pass, Pending, Plan};
use crate::metrics::{self, Cmd, Tally};
use crate::router::Table;

/// Read buffer size for an idle connection, and the least spare room offered
/// to each read.
const READ_CHUNK: usize = 16 * 1024;

/// Answers pending past this many bytes are written before more requests are
/// decoded, so a client that pipelines without reading cannot grow the output
/// without bound.
const OUT_HIGH_WATER: usize = 256 * 1024;

/// A read buffer grown past this (by a large value) is given back once empty.
const READ_SHRINK: usize = 4 * READ_CHUNK;

/// Most iovecs handed to one vectored write.
const MAX_IOV: usize = 64;

/// Serve one client until it closes, errs, or the node shuts down.
pub(crate) async fn serve<S>(mut stream: S, node: &Node, stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let counters = &node.counters;
    counters.curr_connections.fetch_add(1, Ordering::Relaxed);
    counters.total_connections.fetch_add(1, Ordering::Relaxed);
    let mut conn = Conn {
        rbuf: BytesMut::with_capacity(READ_CHUNK),
        out: OutBuf::new(),
        swallow: 0,
        table: None,
        afters: Vec::new(),
        pass: Pass::default(),
        waiting: Vec::new(),
    };
    if let Err(e) = conn.run(&mut stream, node, stop).await {
        debug!("connection closed: {e}");
    }
    counters.curr_connections.fetch_sub(1, Ordering::Relaxed);
}

/// Tell a client over the connection limit why, then close.
pub(crate) async fn reject<S: AsyncWrite + Unpin>(mut stream: S, why: &'static [u8]) {
    let _ = stream.write_all(why).await;
    let _ = stream.shutdown().await;
}

struct Conn {
    rbuf: BytesMut,
    out: OutBuf,
    /// Payload bytes still to discard (a value refused as too large).
    swallow: usize,
    /// The routing table this connection last used, and its version.
    table: Option<(u64, Arc<Table>)>,
    /// `afters[i]`: the local answers that follow the pass's `i`th answer
    /// waiting on peers. Emptied after each pass and kept, so a pass with
    /// forwarded requests allocates none.
    afters: Vec<OutBuf>,
    /// The gets a pass gathers per owner, emptied after each pass.
    pass: Pass,
    /// The last pass's (emptied) list of answers waiting on peers, kept for
    /// its allocation.
    waiting: Waiting<'static>,
}

/// Why `process` stopped.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// The buffer holds no whole request: read more.
    Read,
    /// Output reached the high-water mark: write, then decode again.
    Write,
    /// Write what is pending, then close.
    Close,
}

impl Conn {
    async fn run<S>(
        &mut self,
        stream: &mut S,
        node: &Node,
        mut stop: watch::Receiver<bool>,
    ) -> io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // One wait for the node's stop, registered once for the whole
        // connection: a new `changed()` per read would take the channel's
        // lock (shared by every connection on every thread) twice a read.
        let stopped = stop.changed();
        tokio::pin!(stopped);
        loop {
            let next = {
                let Conn {
                    rbuf,
                    out,
                    swallow,
                    table,
                    afters,
                    pass,
                    waiting: kept,
                } = &mut *self;
                if let Some(router) = &node.router {
                    router.refresh(table);
                }
                let table = table.as_ref().map(|(_, t)| &**t);
                let started = node.metrics.as_ref().map(|m| m.now());
                // With peers to forward to, the pass reads a frozen view of
                // the buffer, so forwarded keys and values are slices of it
                // rather than copies.
                let forwards = table.is_some_and(|t| !t.remotes.is_empty());
                let input = if forwards {
                    rbuf.split().freeze()
                } else {
                    Bytes::new()
                };
                let data: &[u8] = if forwards { &input } else { rbuf };
                let mut passed = Passed {
                    waiting: recycle(std::mem::take(kept)),
                    pass,
                    tally: Tally::default(),
                };
                let (next, consumed) =
                    process(data, &input, swallow, out, &mut passed, afters, node, table);
                let Passed {
                    mut waiting,
                    pass,
                    tally,
                } = passed;
                // Answers from peers, in the client's order, each followed
                // by the local answers decoded after it.
                if !waiting.is_empty() {
                    forward::settle(node, pass, &mut waiting).await;
                    for (pending, after) in waiting.drain(..).zip(afters.iter_mut()) {
                        pending.finish(node, out, pass);
                        out.append(after);
                        if after.capacity() > SPARE_CAPACITY {
                            *after = OutBuf::default();
                        }
                    }
                    afters.truncate(MAX_SPARE);
                    pass.clear();
                }
                *kept = recycle(waiting);
                if let (Some(metrics), Some(started)) = (&node.metrics, started) {
                    metrics.pass(started, &tally);
                }
                if forwards {
                    restore(rbuf, input, consumed);
                } else {
                    rbuf.advance(consumed);
                }
                next
            };
            if !self.out.is_empty() {
                let written = self.out.len();
                write_out(stream, &mut self.out).await?;
                node.counters
                    .bytes_written
                    .fetch_add(written as u64, Ordering::Relaxed);
            }
            match next {
                Next::Close => return stream.shutdown().await,
                Next::Write => continue,
                Next::Read => {}
            }
            if self.rbuf.is_empty() && self.rbuf.capacity() > READ_SHRINK {
                self.rbuf = BytesMut::with_capacity(READ_CHUNK);
            }
            self.rbuf.reserve(READ_CHUNK);
            let n = tokio::select! {
                n = stream.read_buf(&mut self.rbuf) => n?,
                _ = &mut stopped => return Ok(()),
            };
            if n == 0 {
                return Ok(());
            }
            node.counters
                .bytes_read
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// Answers waiting on peers, in the client's order (the local answers that
/// follow each are in the connection's `afters`).
type Waiting<'a> = Vec<Pending<'a>>;

/// Makes `rbuf` (emptied by the split that made `input`) the unconsumed
/// rest of `input` again, without copying it when no slice of the input is
/// still held (the usual case: forwarded operations are encoded and dropped
/// before their answers arrive).
fn restore(rbuf: &mut BytesMut, input: Bytes, consumed: usize) {
    if consumed == input.len() {
        // Everything was answered: `rbuf` keeps the buffer's spare room,
        // and reclaims the rest once the slices are dropped.
        return;
    }
    let rest = input.slice(consumed..);
    drop(input);
    // `rbuf` shares the buffer too: let go of it, so the rest can own it.
    drop(std::mem::take(rbuf));
    *rbuf = rest
        .try_into_mut()
        .unwrap_or_else(|rest| BytesMut::from(&rest[..]));
}

/// An emptied list's allocation, handed on to a list of answers that
/// borrow another read buffer: std collects a `Vec`'s `into_iter` in place
/// when the element layouts match, as they do here (only a lifetime
/// differs), so a connection's pass allocates this list only when it grows
/// past the largest one before.
#[allow(clippy::unnecessary_filter_map)] // `filter` cannot change the type
fn recycle<'b>(emptied: Waiting<'_>) -> Waiting<'b> {
    emptied.into_iter().filter_map(|_| None).collect()
}

/// What one pass leaves besides the answers already in the output.
struct Passed<'a, 'p> {
    waiting: Waiting<'a>,
    /// The gets gathered per owner.
    pass: &'p mut Pass,
    /// Requests per command, for the latency histogram.
    tally: Tally,
}

/// Most emptied answer buffers a connection keeps in `afters` for reuse,
/// and the largest it keeps: an idle connection holds at most 64 × 4 KiB.
const MAX_SPARE: usize = 64;
const SPARE_CAPACITY: usize = 4096;

/// Most answers waiting on peers in one pass: past it, they are finished
/// and written before more requests are decoded.
const MAX_WAITING: usize = 1024;

/// Answers every whole request in `rbuf`: local ones into `out` (or after
/// the last answer waiting on peers, in its buffer in `afters`),
/// forwarded ones into `passed`. `input` is the frozen buffer `rbuf` views
/// when this node forwards (empty otherwise): forwarded keys and values are
/// slices of it. Returns why it stopped and how many bytes of `rbuf` it
/// consumed.
#[allow(clippy::too_many_arguments)]
fn process<'a>(
    rbuf: &'a [u8],
    input: &Bytes,
    swallow: &mut usize,
    out: &mut OutBuf,
    passed: &mut Passed<'a, '_>,
    afters: &mut Vec<OutBuf>,
    node: &Node,
    table: Option<&Table>,
) -> (Next, usize) {
    let Passed {
        waiting,
        pass,
        tally,
    } = passed;
    let metrics = node.metrics.as_ref();
    let mut pos = 0;
    let mut waiting_len = 0;
    let next = loop {
        if *swallow > 0 {
            let n = (*swallow).min(rbuf.len() - pos);
            pos += n;
            *swallow -= n;
            if *swallow > 0 {
                break Next::Read;
            }
        }
        // Local answers go after the last answer waiting on peers, if any.
        let last = waiting.len().checked_sub(1);
        let last_len = last.map_or(0, |i| afters[i].len());
        if out.len() + waiting_len + last_len >= OUT_HIGH_WATER || waiting.len() >= MAX_WAITING {
            break Next::Write;
        }
        let cur = match last {
            Some(i) => &mut afters[i],
            None => &mut *out,
        };
        match protocol::decode(&rbuf[pos..], &node.limits) {
            Decode::Incomplete => break Next::Read,
            Decode::Request { request, consumed } => {
                pos += consumed;
                let cmd = Cmd::of(&request.command);
                tally.add(cmd);
                let plan = match table {
                    Some(table) => forward::plan(node, table, pass, input, cmd, &request),
                    None => Plan::Local,
                };
                let after = match plan {
                    Plan::Local => exec::execute(node, cmd, &request, cur),
                    Plan::Refuse(error) => {
                        let response = Response::Error(error);
                        metrics::encode(metrics, cmd, &request.reply, &response, cur);
                        match request.command {
                            Command::TooLarge { swallow, .. } => After::Swallow(swallow),
                            _ => After::Continue,
                        }
                    }
                    Plan::Forward(pending, after) => {
                        // The last waiting answer's followers are complete.
                        waiting_len += last_len;
                        waiting.push(pending);
                        if afters.len() < waiting.len() {
                            afters.push(OutBuf::default());
                        }
                        after
                    }
                };
                match after {
                    After::Continue => {}
                    After::Swallow(n) => *swallow = n,
                    After::Close => break Next::Close,
                }
            }
            Decode::Invalid {
                error,
                reply,
                consumed,
                close,
            } => {
                tally.add(Cmd::Invalid);
                let response = Response::Error(error);
                metrics::encode(metrics, Cmd::Invalid, &reply, &response, cur);
                pos += consumed;
                if close {
                    break Next::Close;
                }
            }
        }
    };
    if let Some(table) = table {
        pass.seal(table);
    }
    (next, pos)
}

/// Write everything pending, in vectored writes.
async fn write_out<S: AsyncWrite + Unpin>(stream: &mut S, out: &mut OutBuf) -> io::Result<()> {
    while !out.is_empty() {
        let written = {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n = out.io_slices(&mut slices);
            stream.write_vectored(&slices[..n]).await?
        };
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        out.advance(written);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_list_keeps_its_allocation() {
        let emptied: Waiting<'static> = Vec::with_capacity(24);
        let recycled: Waiting<'_> = recycle(emptied);
        assert!(recycled.capacity() >= 24, "{}", recycled.capacity());
    }

    #[test]
    fn the_unconsumed_rest_of_the_input_is_read_again_without_a_copy() {
        let mut rbuf = BytesMut::with_capacity(64);
        rbuf.extend_from_slice(b"get a\r\nget b\r\nget");
        let input = rbuf.split().freeze();
        let rest_at = input[14..].as_ptr();
        restore(&mut rbuf, input, 14);
        assert_eq!(&rbuf[..], b"get");
        assert_eq!(rbuf.as_ptr(), rest_at, "the rest was copied");
        rbuf.extend_from_slice(b" c\r\n");
        assert_eq!(&rbuf[..], b"get c\r\n");

        // A slice still held elsewhere: the rest is copied, the slice kept.
        let input = rbuf.split().freeze();
        let held = input.slice(0..3);
        restore(&mut rbuf, input, 4);
        assert_eq!((&rbuf[..], &held[..]), (&b"c\r\n"[..], &b"get"[..]));

        // All consumed: nothing left to read.
        let input = rbuf.split().freeze();
        let len = input.len();
        restore(&mut rbuf, input, len);
        assert!(rbuf.is_empty());
    }
}

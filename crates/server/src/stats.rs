//! memcached's `stats` groups, with memcached's field names and meanings so
//! existing memcache tooling reads them.

use std::sync::atomic::Ordering;

use crate::Node;
use crate::exec::VERSION;

/// The lines of one stats group, or `None` for a group memcached would not
/// know either (answered `ERROR`, as memcached does).
pub(crate) fn group(node: &Node, group: &[u8]) -> Option<Vec<(String, String)>> {
    let name = group.split(|&b| b == b' ').find(|t| !t.is_empty());
    let mut lines = Lines::default();
    match name {
        None => general(node, &mut lines),
        Some(b"settings") => settings(node, &mut lines),
        Some(b"items") => items(node, &mut lines),
        Some(b"slabs") => slabs(node, &mut lines),
        Some(b"cluster") => cluster(node, &mut lines),
        Some(b"hotkeys") => hotkeys(node, &mut lines),
        Some(_) => return None,
    }
    Some(lines.0)
}

#[derive(Default)]
struct Lines(Vec<(String, String)>);

impl Lines {
    fn add(&mut self, name: impl Into<String>, value: impl ToString) {
        self.0.push((name.into(), value.to_string()));
    }
}

fn general(node: &Node, out: &mut Lines) {
    let c = &node.counters;
    let s = node.store.stats();
    let (user, system) = rusage();
    out.add("pid", std::process::id());
    out.add("uptime", node.started.elapsed().as_secs());
    out.add("time", node.store.now());
    out.add("version", VERSION);
    out.add("pointer_size", usize::BITS);
    out.add("rusage_user", format!("{user:.6}"));
    out.add("rusage_system", format!("{system:.6}"));
    out.add("max_connections", node.settings.conn_limit);
    out.add(
        "curr_connections",
        c.curr_connections.load(Ordering::Relaxed),
    );
    out.add(
        "total_connections",
        c.total_connections.load(Ordering::Relaxed),
    );
    out.add(
        "rejected_connections",
        c.rejected_connections.load(Ordering::Relaxed),
    );
    out.add("cmd_get", c.cmd_get.load(Ordering::Relaxed));
    out.add("cmd_set", c.cmd_set.load(Ordering::Relaxed));
    out.add("cmd_flush", c.cmd_flush.load(Ordering::Relaxed));
    out.add("cmd_touch", c.cmd_touch.load(Ordering::Relaxed));
    out.add("get_hits", s.get_hits);
    out.add("get_misses", s.get_misses);
    out.add("get_expired", s.get_expired);
    out.add("get_flushed", s.get_flushed);
    out.add("delete_misses", s.delete_misses);
    out.add("delete_hits", s.delete_hits);
    out.add("incr_misses", s.incr_misses);
    out.add("incr_hits", s.incr_hits);
    out.add("decr_misses", s.decr_misses);
    out.add("decr_hits", s.decr_hits);
    out.add("cas_misses", s.cas_misses);
    out.add("cas_hits", s.cas_hits);
    out.add("cas_badval", s.cas_badval);
    out.add("touch_hits", s.touch_hits);
    out.add("touch_misses", s.touch_misses);
    out.add("auth_cmds", c.auth_cmds.load(Ordering::Relaxed));
    out.add("auth_errors", 0);
    out.add("peer_ops", c.peer_ops.load(Ordering::Relaxed));
    out.add("peer_batches", c.peer_batches.load(Ordering::Relaxed));
    out.add("bytes_read", c.bytes_read.load(Ordering::Relaxed));
    out.add("bytes_written", c.bytes_written.load(Ordering::Relaxed));
    out.add("limit_maxbytes", s.limit_maxbytes);
    out.add("accepting_conns", 1);
    out.add("threads", node.settings.threads);
    out.add("bytes", s.bytes);
    out.add("curr_items", s.curr_items);
    out.add("total_items", s.total_items);
    out.add("expired_unfetched", s.expired_unfetched);
    out.add("evicted_unfetched", s.evicted_unfetched);
    out.add("evictions", s.evictions);
    out.add("reclaimed", s.reclaimed);
    if let Some(router) = &node.router {
        let table = router.table();
        out.add("cluster_members", table.view.members.len());
        out.add("cluster_ring_members", table.view.ring.len());
        out.add(
            "cluster_ring_version",
            format!("{:016x}", table.view.ring.version()),
        );
        let (mut forwarded, mut errors) = (0, 0);
        for (_, s) in router.peer_stats() {
            forwarded += s.forwarded.load(Ordering::Relaxed);
            errors += s.errors.load(Ordering::Relaxed);
        }
        out.add("cluster_forwarded", forwarded);
        out.add("cluster_forward_errors", errors);
    }
}

/// `stats hotkeys`: the most requested and the most missed keys at this
/// node (gets by clients of this node; estimates, sampled): `requested:N`
/// and `missed:N` with `<count> <key>`. Nothing when metrics are off.
fn hotkeys(node: &Node, out: &mut Lines) {
    let Some(metrics) = &node.metrics else {
        return;
    };
    let (requested, missed) = metrics.hot_keys();
    for (what, list) in [("requested", requested), ("missed", missed)] {
        for (rank, hot) in list.iter().enumerate() {
            out.add(
                format!("{what}:{}", rank + 1),
                format!("{} {}", hot.count, hot.key),
            );
        }
    }
}

/// `stats cluster`: this node's view of the membership and its forwarding
/// figures per peer. A plain single node answers `ready 1` and no members.
fn cluster(node: &Node, out: &mut Lines) {
    let Some(router) = &node.router else {
        out.add("node_name", "-");
        out.add("node_state", "ready");
        out.add("ready", 1);
        out.add("members", 1);
        out.add("ring_members", 1);
        return;
    };
    let table = router.table();
    let view = &table.view;
    out.add("node_name", view.local.name());
    out.add("node_state", view.local.state());
    out.add("ready", u8::from(table.ready));
    out.add("joined", u8::from(view.joined));
    out.add("generation", view.generation());
    out.add("epoch", view.epoch);
    out.add("ring_version", format!("{:016x}", view.ring.version()));
    out.add("ring_members", view.ring.len());
    out.add("members", view.members.len());
    for m in &view.members {
        out.add(
            format!("member:{}", m.name()),
            format!(
                "{},{},{},{}",
                m.state(),
                m.memcache_addr(),
                m.peer_addr(),
                m.http_addr()
            ),
        );
    }
    for (name, s) in router.peer_stats() {
        out.add(
            format!("forwarded:{name}"),
            s.forwarded.load(Ordering::Relaxed),
        );
        out.add(
            format!("forward_errors:{name}"),
            s.errors.load(Ordering::Relaxed),
        );
    }
}

fn settings(node: &Node, out: &mut Lines) {
    let st = &node.settings;
    out.add("maxbytes", st.memory_limit);
    out.add("maxconns", st.conn_limit);
    out.add("evictions", "on");
    out.add("num_threads", st.threads);
    out.add("cas_enabled", "yes");
    out.add("item_size_max", st.max_item_size);
    out.add("flush_enabled", if st.disable_flush { "no" } else { "yes" });
    out.add("binding_protocol", "auto-negotiate");
}

/// shoal has no slab classes; it reports its whole store as class 1 so tools
/// that sum over classes get the right totals.
fn items(node: &Node, out: &mut Lines) {
    let s = node.store.stats();
    out.add("items:1:number", s.curr_items);
    out.add("items:1:evicted", s.evictions);
    out.add("items:1:evicted_unfetched", s.evicted_unfetched);
    out.add("items:1:expired_unfetched", s.expired_unfetched);
    out.add("items:1:reclaimed", s.reclaimed);
}

fn slabs(node: &Node, out: &mut Lines) {
    let s = node.store.stats();
    out.add("1:used_chunks", s.curr_items);
    out.add("1:mem_requested", s.bytes);
    out.add("active_slabs", 1);
    out.add("total_malloced", s.bytes);
}

/// User and system CPU seconds of this process.
fn rusage() -> (f64, f64) {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}

//! The binary codec's hot path allocates nothing: decoding get, set, delete
//! and incr requests, and encoding their answers into a warmed-up
//! [`OutBuf`].
//!
//! A test binary of its own, with one test, so the counting allocator sees
//! no other test's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use protocol::binary::{decode, encode};
use protocol::{Decode, Hit, Limits, OutBuf, Reply, Response, Value};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn frame(opcode: u8, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = u32::try_from(extras.len() + key.len() + value.len()).unwrap();
    let mut f = vec![0x80, opcode];
    f.extend_from_slice(&u16::try_from(key.len()).unwrap().to_be_bytes());
    f.push(u8::try_from(extras.len()).unwrap());
    f.extend_from_slice(&[0, 0, 0]);
    f.extend_from_slice(&body.to_be_bytes());
    f.extend_from_slice(&7u32.to_be_bytes());
    f.extend_from_slice(&0u64.to_be_bytes());
    f.extend_from_slice(extras);
    f.extend_from_slice(key);
    f.extend_from_slice(value);
    f
}

#[test]
fn get_set_delete_incr_allocate_nothing() {
    let limits = Limits::default();
    let value = vec![b'v'; 100];
    let mut stream = Vec::new();
    for _ in 0..100 {
        stream.extend(frame(0x00, &[], b"key:000001", &[]));
        stream.extend(frame(0x0d, &[], b"key:000002", &[]));
        stream.extend(frame(0x01, &[0; 8], b"key:000001", &value));
        stream.extend(frame(0x11, &[0; 8], b"key:000003", &value));
        stream.extend(frame(0x04, &[], b"key:000001", &[]));
        stream.extend(frame(
            0x05,
            &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            b"n",
            &[],
        ));
        stream.extend(frame(0x0a, &[], &[], &[]));
    }
    let hit = Response::Hit(Hit {
        key: b"key:000001",
        flags: 0,
        cas: 1,
        value: Value::Slice(&value),
        ttl: -1,
        last_access: 0,
        fetched: false,
    });

    let mut out = OutBuf::new();
    let run = |out: &mut OutBuf| {
        let mut rest = &stream[..];
        while let Decode::Request { request, consumed } = decode(rest, &limits) {
            let Reply::Binary(reply) = request.reply else {
                unreachable!()
            };
            let response = match reply.opcode {
                0x00 | 0x0d => &hit,
                0x01 | 0x11 => &Response::Stored { cas: 2 },
                0x04 => &Response::Deleted,
                0x05 => &Response::Number { value: 2, cas: 3 },
                _ => &Response::Ok,
            };
            encode(&reply, response, out);
            encode(&reply, &Response::End, out);
            rest = &rest[consumed..];
        }
        assert!(rest.is_empty());
    };
    // Warm up: the output buffer grows to its working size once.
    run(&mut out);
    let written = out.len();
    out.clear();

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    run(&mut out);
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(out.len(), written);
    assert_eq!(after - before, 0, "allocations on the hot path");
}

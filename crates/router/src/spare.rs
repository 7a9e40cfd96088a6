//! Buffers a relay has emptied, kept for the next message on the same thread: a client holds
//! no buffer while it is idle (what it costs then is the relay's state only), and a busy one
//! does not allocate and free its buffers at every transaction.

use std::cell::RefCell;

use bytes::BytesMut;

/// What a new buffer holds before it grows: a transaction's messages usually fit.
const SIZE: usize = 4096;
/// A buffer that grew beyond this (a large result, a COPY) is freed when it empties.
const LARGEST: usize = 16 * 1024;
/// Spare buffers kept per thread and kind: at most 64 × 16 kB per thread in all.
const KEPT: usize = 32;

thread_local! {
    static BYTES: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static VECS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer: a spare one, else a new one of `SIZE`.
pub(crate) fn bytes() -> BytesMut {
    BYTES
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| BytesMut::with_capacity(SIZE))
}

/// Append `data` to `buf`, which starts as a spare buffer when it has none and `data` fits.
pub(crate) fn append(buf: &mut BytesMut, data: &[u8]) {
    if buf.capacity() == 0 && !data.is_empty() && data.len() <= SIZE {
        *buf = bytes();
    }
    buf.extend_from_slice(data);
}

/// Give back a buffer whose contents are consumed.
pub(crate) fn give_bytes(mut buf: BytesMut) {
    buf.clear();
    // Reclaimed in place: the space already consumed at its front counts again.
    if !buf.try_reclaim(SIZE) || buf.capacity() > LARGEST {
        return;
    }
    let _ = BYTES.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEPT {
            spare.push(buf);
        }
    });
}

/// An empty byte vector: a spare one, else a new one of `SIZE`.
pub(crate) fn vec() -> Vec<u8> {
    VECS.try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(SIZE))
}

/// Give back a vector whose contents are consumed.
pub(crate) fn give_vec(mut buf: Vec<u8>) {
    if !(SIZE..=LARGEST).contains(&buf.capacity()) {
        return;
    }
    buf.clear();
    let _ = VECS.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEPT {
            spare.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emptied_buffer_is_used_again_and_a_large_one_is_not_kept() {
        let mut buf = bytes();
        buf.extend_from_slice(b"hello");
        let at = buf.as_ptr();
        bytes::Buf::advance(&mut buf, 5);
        give_bytes(buf);
        let again = bytes();
        assert_eq!(
            again.as_ptr(),
            at,
            "the spare buffer, reclaimed from its start"
        );
        assert!(again.is_empty() && again.capacity() >= SIZE);

        let mut large = bytes();
        large.extend_from_slice(&vec![0u8; LARGEST + 1]);
        let at = large.as_ptr();
        give_bytes(large);
        assert_ne!(bytes().as_ptr(), at, "a large buffer is freed");

        let mut v = vec();
        v.extend_from_slice(b"query");
        let at = v.as_ptr();
        give_vec(v);
        let v = vec();
        assert_eq!(v.as_ptr(), at);
        assert!(v.is_empty());
        // One that never came from here and is too small for the next message: freed.
        give_vec(Vec::with_capacity(8));
        assert!(vec().capacity() >= SIZE);
    }

    #[test]
    fn the_spares_stay_bounded() {
        let many: Vec<_> = (0..KEPT * 2).map(|_| bytes()).collect();
        for buf in many {
            give_bytes(buf);
        }
        assert_eq!(BYTES.with_borrow(Vec::len), KEPT);
    }
}

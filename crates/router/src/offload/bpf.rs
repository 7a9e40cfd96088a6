//! The few bpf(2) calls kernel forwarding needs, and its one program, written out as
//! instructions (twelve of them: a compiler toolchain for BPF would be a far larger
//! dependency than this file).
//!
//! The program runs in the kernel for every chunk of data that arrives on a socket of the
//! map it is attached to (`members`). It looks up the socket's own cookie in a second map,
//! where the router stored the *partner* socket (the client under the server's cookie and
//! the server under the client's), and asks the kernel to send the data out on that
//! partner:
//!
//! ```text
//! key = bpf_get_socket_cookie(skb);
//! bpf_sk_redirect_hash(skb, &map, &key, 0);   // 0 = out of the partner socket
//! return SK_PASS;
//! ```
//!
//! SK_PASS with the redirect set sends the data to the partner; where the socket's key is
//! not in the second map (the router took it out: `Pair::hold_client`), no redirect is set
//! and the data stays on the socket itself, for the router to read. (Returning the helper's
//! answer would drop it.) Two maps, because a socket's entry in the first one is what
//! makes the program run on it and what keeps the data the kernel has on its way to it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;

const BPF_MAP_TYPE_SOCKHASH: u32 = 18;
const BPF_PROG_TYPE_SK_SKB: u32 = 14;
/// Verdict without a stream parser (Linux 5.13).
const BPF_SK_SKB_VERDICT: u32 = 38;
/// BPF_NOEXIST: an update must not replace an entry.
const BPF_NOEXIST: u64 = 1;

const FUNC_GET_SOCKET_COOKIE: i32 = 46;
/// The verdict that delivers (redirected, when the helper set a redirect).
const SK_PASS: i32 = 1;
const FUNC_SK_REDIRECT_HASH: i32 = 72;

#[repr(C)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

#[repr(C)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

#[repr(C)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, properly laid out bpf_attr prefix of the given size; the
    // kernel reads (and for some commands writes) only those bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// A socket hash map: socket cookie (u64) → socket.
pub(super) fn sockhash(max_entries: u32) -> io::Result<OwnedFd> {
    let mut attr = MapCreate {
        map_type: BPF_MAP_TYPE_SOCKHASH,
        key_size: 8,
        value_size: 4,
        max_entries,
        map_flags: 0,
    };
    bpf(BPF_MAP_CREATE, &mut attr).map(owned)
}

/// Store `socket` under `key` (the partner's cookie).
pub(super) fn insert(map: &OwnedFd, key: u64, socket: RawFd) -> io::Result<()> {
    let value = socket as u32;
    let mut attr = MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u64 as u64,
        value: &value as *const u32 as u64,
        flags: BPF_NOEXIST,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
}

pub(super) fn remove(map: &OwnedFd, key: u64) -> io::Result<()> {
    let mut attr = MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u64 as u64,
        value: 0,
        flags: 0,
    };
    bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(|_| ())
}

/// One instruction: opcode, destination and source registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    (code as u64)
        | (((dst & 0xf) | ((src & 0xf) << 4)) as u64) << 8
        | ((off as u16) as u64) << 16
        | ((imm as u32) as u64) << 32
}

fn program(map: RawFd) -> Vec<u64> {
    const MOV64_REG: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
    const MOV64_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    const ADD64_IMM: u8 = 0x07; // BPF_ALU64 | BPF_ADD | BPF_K
    const STX_DW: u8 = 0x7b; // BPF_STX | BPF_MEM | BPF_DW
    const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW (two slots)
    const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
    const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
    const PSEUDO_MAP_FD: u8 = 1;
    vec![
        insn(MOV64_REG, 6, 1, 0, 0),                 // r6 = skb
        insn(CALL, 0, 0, 0, FUNC_GET_SOCKET_COOKIE), // r0 = cookie(skb)
        insn(STX_DW, 10, 0, -8, 0),                  // *(u64 *)(fp - 8) = r0
        insn(MOV64_REG, 1, 6, 0, 0),                 // r1 = skb
        insn(LD_IMM64, 2, PSEUDO_MAP_FD, 0, map),    // r2 = &map
        0,                                           //   (second half)
        insn(MOV64_REG, 3, 10, 0, 0),                // r3 = fp
        insn(ADD64_IMM, 3, 0, 0, -8),                // r3 = fp - 8 (&key)
        insn(MOV64_IMM, 4, 0, 0, 0),                 // r4 = 0 (egress)
        insn(CALL, 0, 0, 0, FUNC_SK_REDIRECT_HASH),  // redirect(...)
        insn(MOV64_IMM, 0, 0, 0, SK_PASS),           // r0 = SK_PASS
        insn(EXIT, 0, 0, 0, 0),                      // return r0
    ]
}

/// Load the program (looking up partners in `lookup`) and attach it to `members` as its
/// verdict program.
pub(super) fn attach_program(members: &OwnedFd, lookup: &OwnedFd) -> io::Result<OwnedFd> {
    let insns = program(lookup.as_raw_fd());
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut load = ProgLoad {
        prog_type: BPF_PROG_TYPE_SK_SKB,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
    };
    let prog = match bpf(BPF_PROG_LOAD, &mut load) {
        Ok(fd) => owned(fd),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let verifier = String::from_utf8_lossy(&log[..end]);
            return Err(io::Error::new(
                e.kind(),
                format!("loading the forwarding program: {e}; {}", verifier.trim()),
            ));
        }
    };
    let mut attach = ProgAttach {
        target_fd: members.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_SK_SKB_VERDICT,
        attach_flags: 0,
    };
    bpf(BPF_PROG_ATTACH, &mut attach)
        .map_err(|e| io::Error::new(e.kind(), format!("attaching the forwarding program: {e}")))?;
    Ok(prog)
}

/// The kernel's cookie of a socket (SO_COOKIE): unique for the socket's lifetime.
pub(super) fn cookie(socket: RawFd) -> io::Result<u64> {
    let mut value: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: value/len point to a u64 and its size, as SO_COOKIE expects.
    let r = unsafe {
        libc::getsockopt(
            socket,
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            &mut value as *mut u64 as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_are_encoded_as_the_kernel_reads_them() {
        // r6 = r1: opcode 0xbf, dst 6 in the low nibble, src 1 in the high one.
        assert_eq!(insn(0xbf, 6, 1, 0, 0), 0x16bf);
        // *(u64 *)(r10 - 8) = r0
        assert_eq!(insn(0x7b, 10, 0, -8, 0), 0x0000_0000_fff8_0a7b);
        // r3 += -8
        assert_eq!(insn(0x07, 3, 0, 0, -8), 0xffff_fff8_0000_0307);
        // call 72
        assert_eq!(insn(0x85, 0, 0, 0, 72), 0x0000_0048_0000_0085);
        let p = program(7);
        assert_eq!(p.len(), 12);
        assert_eq!(
            p[4] >> 32,
            7,
            "the map's descriptor is the load's immediate"
        );
        assert_eq!((p[4] >> 12) & 0xf, 1, "marked as a map descriptor");
    }
}

//! Making one system call fail in a worker process, as a limit or an older kernel would:
//! a seccomp filter on the calling thread (and the threads it starts from then on).

/// Makes system call `nr` fail with `errno` from now on, in this thread and the threads
/// it starts. (x86-64 and aarch64: the call numbers are the native ones.)
pub fn refuse(nr: libc::c_long, errno: i32) {
    const LOAD_NR: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let filter = [
        libc::sock_filter { code: LOAD_NR, jt: 0, jf: 0, k: 0 }, // seccomp_data.nr
        libc::sock_filter { code: JEQ, jt: 0, jf: 1, k: nr as u32 },
        libc::sock_filter { code: RET, jt: 0, jf: 0, k: libc::SECCOMP_RET_ERRNO | errno as u32 },
        libc::sock_filter { code: RET, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW },
    ];
    let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut libc::sock_filter };
    // SAFETY: prctl with a valid filter program that lives across the call.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program as *const libc::sock_fprog),
            0,
            "install a seccomp filter: {}",
            std::io::Error::last_os_error()
        );
    }
}

//! End to end with real initiators: libiscsi's command-line tools and QEMU's iSCSI client log
//! in to our tgtd, inspect the LUN, write data and read it back.

use crate::common;
use common::{require_tool, run, Tgtd};

const IQN: &str = "iqn.2026-11.io.curve-tgt:e2e";

#[test]
fn discovery_inquiry_capacity_and_data_round_trip() {
    require_tool("iscsi-ls");
    require_tool("iscsi-inq");
    require_tool("iscsi-readcapacity16");
    let t = Tgtd::start();
    t.add_target(1, IQN);
    let lun_file = t.sparse_file("lun1.img", 64 << 20);
    t.add_lun(1, 1, "rdwr", &lun_file);

    // Discovery lists the target at our portal.
    let (ok, out, err) = run("iscsi-ls", &[&format!("iscsi://127.0.0.1:{}", t.port)]);
    assert!(ok, "iscsi-ls failed: {err}");
    assert!(
        out.contains(&format!("Target:{IQN}")),
        "iscsi-ls output: {out}"
    );

    // Standard INQUIRY shows tgt's default identity.
    let (ok, out, err) = run("iscsi-inq", &[&t.url(IQN, 1)]);
    assert!(ok, "iscsi-inq failed: {err}");
    assert!(out.contains("Vendor:IET"), "{out}");
    assert!(out.contains("Product:VIRTUAL-DISK"), "{out}");

    // READ CAPACITY(16) reports the file size in 512-byte blocks.
    let (ok, out, err) = run("iscsi-readcapacity16", &[&t.url(IQN, 1)]);
    assert!(ok, "iscsi-readcapacity16 failed: {err}");
    assert!(out.contains("LOGICAL BLOCK LENGTH IN BYTES:512"), "{out}");
    assert!(
        out.contains(&format!("Total size:{}", 64u64 << 20)),
        "{out}"
    );
}

#[test]
fn qemu_img_writes_and_reads_back_through_the_target() {
    require_tool("qemu-img");
    let t = Tgtd::start();
    t.add_target(1, IQN);
    let lun_file = t.sparse_file("lun1.img", 8 << 20);
    t.add_lun(1, 1, "rdwr", &lun_file);

    // A pseudo-random 8 MiB image, written through iSCSI, must land byte-exact in the file
    // and come back byte-exact through iSCSI.
    let src = t.dir.path().join("src.img");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..(8 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&src, &data).unwrap();
    let url = t.url(IQN, 1);
    let (ok, _, err) = run(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            src.to_str().unwrap(),
            &url,
        ],
    );
    assert!(ok, "qemu-img write failed: {err}");
    assert!(
        std::fs::read(&lun_file).unwrap() == data,
        "backing file differs from what was written"
    );
    let back = t.dir.path().join("back.img");
    let (ok, _, err) = run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &url,
            back.to_str().unwrap(),
        ],
    );
    assert!(ok, "qemu-img read failed: {err}");
    assert!(
        std::fs::read(&back).unwrap() == data,
        "data read back differs"
    );
}

#[test]
fn unknown_target_and_refused_initiator_get_login_errors() {
    require_tool("iscsi-inq");
    let t = Tgtd::start();
    // A target with no ACL admits nobody.
    t.tgtadm_ok(&[
        "--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", "1", "-T", IQN,
    ]);
    let lun_file = t.sparse_file("lun1.img", 1 << 20);
    t.add_lun(1, 1, "rdwr", &lun_file);
    let (ok, _, err) = run("iscsi-inq", &[&t.url(IQN, 1)]);
    assert!(!ok, "login must be refused without an ACL");
    assert!(
        err.to_lowercase().contains("login") || err.to_lowercase().contains("authoriz"),
        "{err}"
    );
    let (ok, _, err) = run("iscsi-inq", &[&t.url("iqn.2026-11.io.curve-tgt:nosuch", 1)]);
    assert!(!ok, "login to an unknown target must fail");
    assert!(!err.is_empty());
}

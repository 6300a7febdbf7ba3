//! Online resize (issue 3, (c)): grow the backing file, `tgtadm --op update --mode
//! logicalunit --params disksize=auto`, and a logged-in initiator's next command gets UNIT
//! ATTENTION / CAPACITY DATA HAS CHANGED (2A/09), after which READ CAPACITY reports the new
//! size; a fresh initiator (libiscsi) and `tgtadm --op show` see it too.

use crate::admin;
use admin::{require, Daemon, Impl, Initiator};

const IQN: &str = "iqn.2001-04.com.example:resize";
const INI: &str = "iqn.1994-05.com.example:resizer";
const CAPACITY_CHANGED: (u8, u8, u8) = (0x6, 0x2a, 0x09);

fn grow(path: &std::path::Path, bytes: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(bytes)
        .unwrap();
}

#[test]
fn disksize_auto_raises_capacity_changed_and_reports_the_new_size() {
    require("iscsi-readcapacity16", "libiscsi-bin");
    admin::require_debian_tgt();
    let d = Daemon::start(Impl::Ours);
    let disk = d.dir.path().join("disk");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let disk_s = disk.to_str().unwrap();
    for args in [
        &["--op", "new", "--mode", "target", "--tid", "1", "-T", IQN][..],
        &[
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            "1",
            "--lun",
            "1",
            "-b",
            disk_s,
        ],
        &[
            "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL",
        ],
    ] {
        d.tgtadm_ok(Impl::Ours, args);
    }

    let mut ini = Initiator::login(d.port, INI, IQN).expect("login");
    ini.drain_unit_attentions(1); // the power-on/reset one
    assert_eq!(ini.read_capacity16(1).unwrap(), ((8 << 20) / 512, 512));

    // Grow, then re-read the size: with our tgtadm, then with Debian's (a drop-in client).
    for (size, who) in [(24u64 << 20, Impl::Ours), (40 << 20, Impl::Debian)] {
        grow(&disk, size);
        // Until told, the target keeps the old size.
        let (blocks, _) = ini
            .read_capacity16(1)
            .expect("no unit attention before update");
        assert!(blocks < size / 512, "size changed before disksize=auto");
        d.tgtadm_ok(
            who,
            &[
                "--op",
                "update",
                "--mode",
                "logicalunit",
                "--tid",
                "1",
                "--lun",
                "1",
                "--params",
                "disksize=auto",
            ],
        );
        // The next command on the existing nexus reports the change...
        let r = ini.test_unit_ready(1);
        assert_eq!(r.status, 2, "CHECK CONDITION expected after resize: {r:?}");
        assert_eq!(r.sense_triple(), Some(CAPACITY_CHANGED), "{r:?}");
        // ...once: then READ CAPACITY gives the new size.
        assert_eq!(ini.read_capacity16(1).unwrap(), (size / 512, 512));
        assert_eq!(ini.test_unit_ready(1).status, 0);

        // A new initiator sees the new size straight away.
        let (ok, out, err) = {
            let o = std::process::Command::new("iscsi-readcapacity16")
                .arg(format!("iscsi://127.0.0.1:{}/{IQN}/1", d.port))
                .output()
                .unwrap();
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        };
        assert!(ok, "iscsi-readcapacity16: {err}");
        assert!(out.contains(&format!("Total size:{size}")), "{out}");

        // And tgtadm's listing uses tgt's MB formula on the new size.
        let s = (size / 512) as i128;
        let mb = (s - (s / 625 - 974)) / 1950;
        let show = d.tgtadm_ok(Impl::Ours, &["--op", "show", "--mode", "target"]);
        assert!(
            show.contains(&format!("Size: {mb} MB, Block size: 512")),
            "{show}"
        );
    }

    // disksize with anything but "auto", or on a missing LU, is refused and changes nothing.
    let o = d.tgtadm(
        Impl::Ours,
        &[
            "--op",
            "update",
            "--mode",
            "lu",
            "--tid",
            "1",
            "--lun",
            "9",
            "--params",
            "disksize=auto",
        ],
    );
    assert_eq!(
        (o.rc, o.err.as_str()),
        (22, "tgtadm: can't find the logical unit\n")
    );
    let o = d.tgtadm(
        Impl::Ours,
        &[
            "--op",
            "update",
            "--mode",
            "lu",
            "--tid",
            "1",
            "--lun",
            "1",
            "--params",
            "disksize=1",
        ],
    );
    assert_eq!(o.rc, 22, "{o:?}");
    assert_eq!(
        ini.test_unit_ready(1).status,
        0,
        "no unit attention from a refused update"
    );
}

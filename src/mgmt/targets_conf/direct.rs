//! `direct-store`: a SCSI device passed through, whose identity (vendor, product, revision,
//! serial, block limits) tgt-admin copies from the device itself with sg3-utils' `sg_inq`
//! and `sg_readcap`, unless the target block sets them.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

/// What the device reports.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Probed {
    /// LU parameter name → value (vendor_id, product_id, ..., la_lba).
    pub params: BTreeMap<&'static str, String>,
    /// `--blocksize` from READ CAPACITY(16).
    pub block_size: Option<String>,
}

/// Whether `cmd` is an executable file in a `$PATH` directory (tgt-admin's `check_exe`).
pub fn on_path(cmd: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .any(|d| {
            std::fs::metadata(std::path::Path::new(d).join(cmd))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn run(prog: &str, args: &[&str]) -> String {
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The value after `key` on the line following `prev`'s (consecutive lines of a report).
fn after<'a>(lines: &[&'a str], i: usize, key: &str) -> Option<&'a str> {
    let l = lines.get(i)?.trim_start();
    l.strip_prefix(key)
}

/// Leading digits after whitespace (`\s+?(\d+)`).
fn digits(s: &str) -> Option<String> {
    let t = s.trim_start();
    let d: String = t.chars().take_while(char::is_ascii_digit).collect();
    (!d.is_empty() && t.len() < s.len()).then_some(d)
}

/// Parses `sg_inq`, `sg_inq -p 0xb0` and `sg_readcap -16` output.
pub fn parse(inq: &str, vpd_b0: &str, readcap: &str) -> Probed {
    let mut p = Probed::default();
    let lines: Vec<&str> = inq.lines().collect();
    if let Some(i) = lines
        .iter()
        .position(|l| l.contains("Vendor identification:"))
    {
        let v = lines[i].split_once("Vendor identification:").map(|x| x.1);
        let prod = after(&lines, i + 1, "Product identification:");
        let rev = after(&lines, i + 2, "Product revision level:");
        if let (Some(v), Some(prod), Some(rev)) = (v, prod, rev) {
            // `\s+?(.*?)`: one blank, then the rest; `\s+(.*?)`: all blanks
            let v = v.strip_prefix(char::is_whitespace).unwrap_or(v);
            p.params.insert("vendor_id", v.to_string());
            p.params.insert("product_id", prod.trim_start().to_string());
            p.params.insert("product_rev", rev.trim_start().to_string());
            if let Some(sn) = after(&lines, i + 3, "Unit serial number:") {
                p.params.insert("scsi_sn", sn.trim_start().to_string());
            }
        }
    }
    let lines: Vec<&str> = vpd_b0.lines().collect();
    if let Some(i) = lines
        .iter()
        .position(|l| l.contains("Optimal transfer length granularity:"))
    {
        let g = lines[i]
            .split_once("Optimal transfer length granularity:")
            .and_then(|x| digits(x.1));
        let m = after(&lines, i + 1, "Maximum transfer length:").and_then(digits);
        let o = after(&lines, i + 2, "Optimal transfer length:").and_then(digits);
        if let (Some(g), Some(_), Some(o)) = (g, m, o) {
            p.params.insert("optimal_xfer_gran", g);
            p.params.insert("optimal_xfer_len", o);
        }
    }
    let lines: Vec<&str> = readcap.lines().collect();
    if let Some(i) = lines
        .iter()
        .position(|l| l.contains("Logical block length="))
    {
        let num = |s: &str| -> Option<String> {
            let d: String = s.chars().take_while(char::is_ascii_digit).collect();
            (!d.is_empty()).then_some(d)
        };
        let bl = lines[i]
            .split_once("Logical block length=")
            .and_then(|x| num(x.1));
        let e = after(&lines, i + 1, "Logical blocks per physical block exponent=").and_then(num);
        let la = after(&lines, i + 2, "Lowest aligned logical block address=").and_then(num);
        if let (Some(bl), Some(e), Some(la)) = (bl, e, la) {
            p.block_size = Some(bl);
            p.params.insert("lbppbe", e);
            p.params.insert("la_lba", la);
        }
    }
    p
}

/// Asks the device.
pub fn probe(dev: &str) -> Probed {
    parse(
        &run("sg_inq", &[dev]),
        &run("sg_inq", &["-p", "0xb0", dev]),
        &run("sg_readcap", &["-16", dev]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sg3_utils_reports() {
        let inq = "standard INQUIRY:\n  PQual=0  PDT=0\n Vendor identification: ATA     \n Product identification: Disk X\n Product revision level: 1.0\n Unit serial number: SN123\n";
        let b0 = "Block limits VPD page (SBC):\n  Optimal transfer length granularity: 8 blocks\n  Maximum transfer length: 65535 blocks\n  Optimal transfer length: 128 blocks\n";
        let rc = "Read Capacity results:\n   Logical block length=512 bytes\n   Logical blocks per physical block exponent=3 [so physical block length=4096 bytes]\n   Lowest aligned logical block address=0\n";
        let p = parse(inq, b0, rc);
        assert_eq!(p.params["vendor_id"], "ATA     ");
        assert_eq!(p.params["product_id"], "Disk X");
        assert_eq!(p.params["scsi_sn"], "SN123");
        assert_eq!(p.params["optimal_xfer_gran"], "8");
        assert_eq!(p.params["optimal_xfer_len"], "128");
        assert_eq!(p.params["lbppbe"], "3");
        assert_eq!(p.block_size.as_deref(), Some("512"));
        assert_eq!(parse("", "", ""), Probed::default());
    }
}

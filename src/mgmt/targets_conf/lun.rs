//! One LU of a target (tgt-admin's `add_backing_direct`, `add_params`, `find_next_lun`,
//! `make_key`): its LUN (the block's `lun`, else the lowest one no other block of the
//! target reserves), the in-use check, `--op new --mode logicalunit` with the store's
//! `bs-type`/`bsopts`/`bsoflags`/`device-type`/`block-size`, then its parameters: mode pages
//! first (write-cache off is one), then the rest in tgt-admin's order.

use super::add::as_list;
use super::admin::{Admin, R};
use super::general::{Node, Value};
use std::collections::{BTreeMap, HashSet};

/// Per store path: its `lun` and `allow-in-use` (tgt-admin's `%data_key`).
pub type DataKey = BTreeMap<String, BTreeMap<&'static str, Option<String>>>;

/// `make_key`: what the `<backing-store>`/`<direct-store>` blocks reserve.
pub fn make_key(topts: &Node) -> DataKey {
    let mut dk = DataKey::new();
    for action in ["lun", "allow-in-use"] {
        for kind in ["backing-store", "direct-store"] {
            if let Some(Value::Hash(stores)) = topts.get(kind) {
                for (store, v) in stores {
                    let val = match v {
                        Value::Hash(n) => n.get(action).map(Value::perl_string),
                        _ => None,
                    };
                    dk.entry(store.clone()).or_default().insert(action, val);
                }
            }
        }
    }
    dk
}

/// `find_next_lun`: the lowest LUN from 1 that no store's values name; reserved for `bs`.
pub fn find_next_lun(bs: &str, dk: &mut DataKey) -> String {
    let mut found: u64 = 1;
    // bounded: each step passes one reserved value, and there are finitely many
    while dk
        .values()
        .flat_map(|m| m.values())
        .any(|v| v.as_deref() == Some(found.to_string().as_str()))
    {
        found += 1;
    }
    let s = found.to_string();
    dk.entry(bs.to_string())
        .or_default()
        .insert("lun", Some(s.clone()));
    s
}

/// The LU parameters `--params NAME="VALUE"` sets.
const LU_PARAMS: &[&str] = &[
    "scsi_id",
    "scsi_sn",
    "vendor_id",
    "product_id",
    "product_rev",
    "sense_format",
    "removable",
    "online",
    "path",
    "mode_page",
    "lbppbe",
    "la_lba",
    "optimal_xfer_gran",
    "optimal_xfer_len",
    "readonly",
];

/// Caching mode page 8 with WCE clear: what `write-cache off` sets.
const WRITE_CACHE_OFF: &str =
    "mode_page=8:0:18:0x10:0:0xff:0xff:0:0:0xff:0xff:0xff:0xff:0x80:0x14:0:0:0:0:0:0";

impl Admin<'_> {
    /// `add_params`: the line for one LU parameter, `None` for keys that are no parameter.
    fn add_params(&self, param: &str, value: &str, lun: &str, driver: &str) -> Option<String> {
        let (cp, tid) = (self.cp(), &self.next_tid);
        let head = format!(
            "tgtadm -C {cp} --lld {driver} --op update --mode logicalunit --tid {tid} --lun={lun}"
        );
        match param {
            "write-cache" => Some(match value {
                "off" => format!("{head} --params {WRITE_CACHE_OFF}"),
                "on" | "" => format!("# Write cache is enabled (default) for lun {lun}."),
                v => format!(
                    "# WARNING! Unknown value ({v}) to write-cache! Accepted values are \"on\" \
                     and \"off\"."
                ),
            }),
            p if LU_PARAMS.contains(&p) => Some(format!("{head} --params {p}=\"{value}\"")),
            "params" => Some(format!("{head} --params \"{value}\"")),
            _ => None,
        }
    }

    /// `add_backing_direct`: one store of a target.
    pub fn add_backing_direct(
        &mut self,
        bs: &str,
        topts: &Node,
        dk: &mut DataKey,
        direct: bool,
        stores: &Node,
    ) -> R {
        let driver = topts["driver"].perl_string();
        let bstype = topts
            .get("bs-type")
            .map(Value::perl_string)
            .unwrap_or_default();
        let mut can_alloc = true;
        let allow = topts.get("allow-in-use").map(Value::perl_string);
        if !bstype.contains("rbd") && !self.o.force && allow.as_deref() != Some("yes") {
            can_alloc = self.check_device(bs, dk)?;
        }
        let p = std::path::Path::new(bs);
        let present = p.exists() && !p.is_dir();
        if !can_alloc {
            self.execute(&format!("# Skipping device {bs} - it is in use."))?;
            self.execute(
                "# You can override it with --force or 'allow-in-use yes' config option.",
            )?;
            return self.execute(
                "# Note - do so only if you know what you're doing, you may damage your data.",
            );
        }
        if !(bstype.contains("glfs") || bstype.contains("rbd") || present) {
            self.execute(&format!("# Skipping device: {bs}"))?;
            return self.execute(&format!(
                "# {bs} does not exist - please check the configuration file"
            ));
        }

        let mut lun = match dk.get(bs).and_then(|m| m.get("lun")).cloned().flatten() {
            Some(l) if !l.is_empty() => l,
            _ => find_next_lun(bs, dk),
        };
        if !stores.is_empty() {
            if let Some(l) = topts.get("lun").filter(|l| l.has_length()) {
                self.check_single(Some(l), "lun")?;
                lun = l.perl_string();
            }
        }
        let mut cmds: Vec<Option<String>> = Vec::new();
        let mut added: HashSet<String> = HashSet::new();
        let (mut device_type, mut bs_type, mut bsopts, mut bsoflags, mut block_size) =
            (None, None, None, None, None);
        if let Some(Value::Hash(opts)) = stores.get(bs) {
            for (so, result) in opts {
                self.check_value(Some(result))?;
                if so != "mode_page" && so != "params" {
                    self.check_single(Some(result), so)?;
                }
                let r = result.perl_string();
                match so.as_str() {
                    "write-cache" => {
                        cmds.push(self.add_params(so, &r, &lun, &driver));
                        added.insert("write_cache".into());
                    }
                    "mode_page" | "params" => {
                        for m in as_list(result) {
                            cmds.push(self.add_params(so, &m.perl_string(), &lun, &driver));
                        }
                    }
                    _ => {
                        cmds.push(self.add_params(so, &r, &lun, &driver));
                        added.insert(so.clone());
                    }
                }
                match so.as_str() {
                    "device-type" => device_type = Some(r),
                    "bs-type" => bs_type = Some(r),
                    "bsopts" => bsopts = Some(r),
                    "bsoflags" => bsoflags = Some(r),
                    "block-size" => block_size = Some(r),
                    _ => {}
                }
            }
        }
        let mut from_device = BTreeMap::new();
        if direct {
            let probed = super::direct::probe(bs);
            for (k, v) in probed.params {
                if !topts.get(k).is_some_and(Value::has_length) {
                    from_device.insert(k, v);
                }
            }
            if block_size.as_deref().is_none_or(str::is_empty) {
                block_size = probed.block_size.or(block_size);
            }
        }
        for opt in [
            "scsi_id",
            "sense_format",
            "removable",
            "online",
            "path",
            "readonly",
        ] {
            self.check_single(topts.get(opt), opt)?;
            if let Some(v) = topts.get(opt).filter(|v| v.has_length()) {
                if !added.contains(opt) {
                    cmds.push(self.add_params(opt, &v.perl_string(), &lun, &driver));
                    added.insert(opt.into());
                }
            }
        }
        for opt in [
            "vendor_id",
            "product_id",
            "product_rev",
            "scsi_sn",
            "lbppbe",
            "la_lba",
            "optimal_xfer_gran",
            "optimal_xfer_len",
        ] {
            self.check_single(topts.get(opt), opt)?;
            let this = match topts.get(opt).filter(|v| v.has_length()) {
                Some(v) => Some(v.perl_string()),
                None => from_device.get(opt).cloned().filter(|s| !s.is_empty()),
            };
            if let Some(v) = this {
                if !added.contains(opt) {
                    cmds.push(self.add_params(opt, &v, &lun, &driver));
                    added.insert(opt.into());
                }
            }
        }
        if !added.contains("write_cache") {
            let wc = topts
                .get("write-cache")
                .map(Value::perl_string)
                .unwrap_or_default();
            cmds.push(self.add_params("write-cache", &wc, &lun, &driver));
        }
        for key in ["mode_page", "params"] {
            for m in topts.get(key).map(as_list).unwrap_or_default() {
                if m.has_length() {
                    cmds.push(self.add_params(key, &m.perl_string(), &lun, &driver));
                }
            }
        }
        let mut fallback = |key: &str, slot: &mut Option<String>| -> R {
            if !added.contains(key) {
                self.check_single(topts.get(key), key)?;
                *slot = topts.get(key).map(Value::perl_string);
            }
            Ok(())
        };
        fallback("device-type", &mut device_type)?;
        fallback("bs-type", &mut bs_type)?;
        fallback("bsopts", &mut bsopts)?;
        fallback("bsoflags", &mut bsoflags)?;
        let flag = |name: &str, v: Option<String>| match v {
            Some(v) if !v.is_empty() => format!("{name} {v}"),
            _ => String::new(),
        };
        let (cp, tid) = (self.cp().to_string(), self.next_tid.clone());
        self.execute(&format!(
            "tgtadm -C {cp} --lld {driver} --op new --mode logicalunit --tid {tid} --lun {lun} \
             -b \"{bs}\" {} {} {} {} {}",
            flag("--device-type", device_type),
            flag("--bstype", bs_type),
            flag("--bsopts", bsopts),
            flag("--bsoflags", bsoflags),
            flag("--blocksize", block_size),
        ))?;
        let cmds: Vec<String> = cmds
            .into_iter()
            .flatten()
            .filter(|c| !c.is_empty())
            .collect();
        let (first, last): (Vec<&String>, Vec<&String>) =
            cmds.iter().partition(|c| c.contains("params mode_page"));
        for c in first.into_iter().chain(last) {
            self.execute(c)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_lun_skips_reserved_values() {
        let mut dk = DataKey::new();
        dk.entry("/a".into())
            .or_default()
            .insert("lun", Some("1".into()));
        dk.entry("/b".into())
            .or_default()
            .insert("lun", Some("3".into()));
        dk.entry("/b".into())
            .or_default()
            .insert("allow-in-use", None);
        assert_eq!(find_next_lun("/c", &mut dk), "2");
        assert_eq!(find_next_lun("/d", &mut dk), "4");
    }
}

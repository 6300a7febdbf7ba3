//! Adding what the file describes (tgt-admin's `add_targets` and `process_options`): the
//! global settings (default driver, iSNS, discovery accounts, control port), then each
//! `<target>` in name order: `--op new --mode target`, then its options in key order
//! (LUNs, accounts, ACLs, iSCSI parameters), then `bind -I ALL` when no
//! `initiator-address` limits it.

use super::admin::{given, Admin, Stop, R};
use super::general::{Node, Value};
use super::lun::{make_key, DataKey};

/// The target `--update` works on, and what tgt-admin found out about it.
#[derive(Clone, Debug)]
pub struct Single {
    pub target: String,
    pub configured: bool,
    pub connected: bool,
    pub in_configfile: bool,
}

/// The iSCSI keys (and `state...`) a target block may set with `--op update --mode target`.
const TARGET_PARAMS: &[&str] = &[
    "MaxRecvDataSegmentLength",
    "MaxXmitDataSegmentLength",
    "HeaderDigest",
    "DataDigest",
    "InitialR2T",
    "MaxOutstandingR2T",
    "ImmediateData",
    "FirstBurstLength",
    "MaxBurstLength",
    "DataPDUInOrder",
    "DataSequenceInOrder",
    "ErrorRecoveryLevel",
    "IFMarker",
    "OFMarker",
    "DefaultTime2Wait",
    "DefaultTime2Retain",
    "OFMarkInt",
    "IFMarkInt",
    "MaxConnections",
];

/// A list of values (`force_array`).
pub fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::List(l) => l.clone(),
        other => vec![other.clone()],
    }
}

/// Perl's `split(/ /, $s)`: single spaces separate; trailing empty fields dropped.
pub fn split_space(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.split(' ').map(str::to_string).collect();
    while v.last().is_some_and(String::is_empty) {
        v.pop();
    }
    v
}

impl Admin<'_> {
    /// The first pass over global keys.
    fn add_globals(&mut self, isns_enabled: bool) -> R {
        let cp = self.cp().to_string();
        let conf = self.conf.clone();
        for (k, v) in &conf {
            match k.as_str() {
                "default-driver" => match v {
                    Value::Str(s) => self.default_driver = s.clone(),
                    _ => {
                        self.say(
                            "Multiple default-driver definitions are not allowed!\n\
                             Check your config file for errors.\n",
                        );
                        return Err(Stop(1));
                    }
                },
                "ignore-errors" if v.as_str() == Some("yes") => self.o.ignore_errors = true,
                "iSNSAccessControl" | "iSNSServerIP" | "iSNSServerPort" if !isns_enabled => {
                    self.check_single(Some(v), k)?;
                    let val = v.perl_string();
                    self.execute(&format!(
                        "tgtadm -C {cp} --op update --mode sys --name {k} -v {val}"
                    ))?;
                }
                "incomingdiscoveryuser" | "outgoingdiscoveryuser" => {
                    let up = split_space(&v.perl_string());
                    self.check_value(up.get(1).map(|p| Value::Str(Some(p.clone()))).as_ref())?;
                    if !self.accounts.contains(&up[0]) {
                        self.execute(&format!(
                            "tgtadm -C {cp} --mode account --op new --user={} --password={}",
                            up[0], up[1]
                        ))?;
                        self.accounts.insert(up[0].clone());
                    }
                    let extra = if k == "outgoingdiscoveryuser" {
                        " --outgoing"
                    } else {
                        ""
                    };
                    self.execute(&format!(
                        "tgtadm -C {cp} --mode account --op bind --user={} {extra}",
                        up[0]
                    ))?;
                }
                _ => {}
            }
        }
        for (k, v) in &conf {
            match k.as_str() {
                "iSNS" => {
                    if !isns_enabled {
                        self.check_single(Some(v), k)?;
                        let cp = self.cp().to_string();
                        self.execute(&format!(
                            "tgtadm -C {cp} --op update --mode sys --name {k} -v {}",
                            v.perl_string()
                        ))?;
                    } else {
                        self.execute("# iSNS already enabled")?;
                    }
                }
                "control-port" => {
                    if self.o.control_port == "0" {
                        self.o.control_port = v.perl_string();
                    } else {
                        self.say(
                            "Multiple control-port definitions are not allowed!\n\
                             Check your config file for errors.\n",
                        );
                        return Err(Stop(1));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `add_targets`: everything in the file (`-e`), or one target (`--update`).
    pub fn add_targets(&mut self, single: Option<Single>) -> R {
        let isns_enabled = self.check_isns()?;
        self.add_globals(isns_enabled)?;
        if self.default_driver.is_none() {
            self.execute("# default-driver not defined, defaulting to iscsi.\n")?;
            self.default_driver = Some("iscsi".into());
        }
        let targets = match self.conf.get("target").cloned() {
            None => return Ok(()),
            Some(Value::Hash(h)) => h,
            Some(_) => {
                let _ = writeln!(
                    self.err,
                    "tgt-admin: \"target\" must be a <target NAME> block"
                );
                return Err(Stop(255));
            }
        };
        for (name, body) in &targets {
            if let Some(s) = &single {
                if s.target != *name {
                    continue;
                }
            }
            self.target = name.clone();
            let Value::Hash(body) = body else {
                let _ = writeln!(self.err, "tgt-admin: <target {name}> is not a block");
                return Err(Stop(255));
            };
            let in_use = match &single {
                Some(_) => self.main_delete(name, None)?,
                None => false,
            };
            let update = given(&self.o.update);
            if !self.st.text.contains_key(name)
                || (update && !in_use)
                || (update && self.o.pretend && self.o.force)
            {
                self.add_one(name, body, single.as_ref())?;
            } else if single.is_none() {
                self.execute(&format!("# Target {name} already exists!"))?;
            }
            self.st.tid.insert(name.clone(), self.next_tid.clone());
        }
        if let Some(s) = &single {
            if !s.in_configfile && !s.configured {
                self.say(&format!(
                    "Target {} is currently not configured\n\
                     and does not exist in the config file - can't continue!\n",
                    s.target
                ));
                return Err(Stop(1));
            }
        }
        self.execute("")
    }

    /// One new target: its tid, `--op new`, its options, and `bind -I ALL` if no address ACL.
    fn add_one(&mut self, name: &str, body: &Node, single: Option<&Single>) -> R {
        match single {
            Some(s) if s.in_configfile && !s.configured && !self.o.pretend => {
                self.next_tid = (self.max_tid() + 1).to_string();
            }
            Some(s) if s.configured => {
                self.next_tid = self.st.tid.get(&s.target).cloned().unwrap_or_default();
            }
            _ => self.bump_tid(),
        }
        let mut topts = Node::new();
        let mut data_key = DataKey::new();
        for (k, v) in body {
            self.option = Some(k.clone());
            self.check_value(Some(v))?;
            topts.insert(k.clone(), v.clone());
            data_key = make_key(&topts);
        }
        if let Some(t) = topts.get("controller_tid") {
            self.next_tid = t.perl_string();
        }
        if !topts.contains_key("driver") {
            let d = self.default_driver.clone().unwrap_or_default();
            topts.insert("driver".into(), Value::Str(Some(d)));
        }
        let driver = topts["driver"].perl_string();
        let (cp, tid) = (self.cp().to_string(), self.next_tid.clone());
        self.execute(&format!("# Adding target: {name}"))?;
        self.execute(&format!(
            "tgtadm -C {cp} --lld {driver} --op new --mode target --tid {tid} -T {name}"
        ))?;
        let mut allow_all = true;
        for (k, v) in body {
            self.option = Some(k.clone());
            self.check_value(Some(v))?;
            self.process_option(k, v, &topts, &mut data_key)?;
            if k == "initiator-address" {
                allow_all = false;
            }
        }
        if allow_all {
            let (cp, tid) = (self.cp().to_string(), self.next_tid.clone());
            self.execute(&format!(
                "tgtadm -C {cp} --lld {driver} --op bind --mode target --tid {tid} -I ALL"
            ))?;
        }
        Ok(())
    }

    /// `process_options`: one key of a target block.
    fn process_option(&mut self, k: &str, v: &Value, topts: &Node, dk: &mut DataKey) -> R {
        let driver = topts["driver"].perl_string();
        let (cp, tid) = (self.cp().to_string(), self.next_tid.clone());
        match k {
            "backing-store" | "direct-store" => {
                let direct = k == "direct-store";
                if direct && !super::direct::on_path("sg_inq") {
                    self.say(
                        "Command 'sg_inq' (needed by 'option direct-store') is not in your \
                         path - can't continue!\n",
                    );
                    return Err(Stop(1));
                }
                // Everything becomes store → its block (or nothing), in path order.
                let stores: Node = match v {
                    Value::Str(s) => [(s.clone().unwrap_or_default(), Value::Str(None))].into(),
                    Value::List(l) => l
                        .iter()
                        .map(|x| (x.perl_string(), Value::Str(Some("1".into()))))
                        .collect(),
                    Value::Hash(h) => h.clone(),
                };
                if stores.keys().any(|s| s.contains("HASH")) {
                    self.say(
                        "\nYour config file is not supported. See targets.conf.example for \
                         details.\n",
                    );
                    return Err(Stop(1));
                }
                for bs in stores.keys() {
                    self.add_backing_direct(bs, topts, dk, direct, &stores)?;
                }
            }
            "incominguser" => {
                for u in as_list(v) {
                    let up = split_space(&u.perl_string());
                    self.check_value(up.get(1).map(|p| Value::Str(Some(p.clone()))).as_ref())?;
                    if !self.accounts.contains(&up[0]) {
                        self.execute(&format!(
                            "tgtadm -C {cp} --lld {driver} --mode account --op new --user={} \
                             --password={}",
                            up[0], up[1]
                        ))?;
                        self.accounts.insert(up[0].clone());
                    }
                    self.execute(&format!(
                        "tgtadm -C {cp} --lld {driver} --mode account --op bind --tid={tid} \
                         --user={}",
                        up[0]
                    ))?;
                }
            }
            "outgoinguser" => {
                let l = as_list(v);
                if l.get(1).is_some_and(Value::has_length) {
                    self.execute(&format!(
                        "# Warning: only one {k} is allowed. Will only use the first one."
                    ))?;
                }
                let up = split_space(&l[0].perl_string());
                self.check_value(up.get(1).map(|p| Value::Str(Some(p.clone()))).as_ref())?;
                if !self.accounts.contains(&up[0]) {
                    self.execute(&format!(
                        "tgtadm -C {cp} --lld {driver} --mode account --op new --user={} \
                         --password={}",
                        up[0], up[1]
                    ))?;
                    self.accounts.insert(up[0].clone());
                }
                self.execute(&format!(
                    "tgtadm -C {cp} --lld {driver} --mode account --op bind --tid={tid} \
                     --user={} --outgoing",
                    up[0]
                ))?;
            }
            "initiator-address" | "initiator-name" => {
                let flag = if k == "initiator-address" { "-I" } else { "-Q" };
                for a in as_list(v) {
                    self.check_value(Some(&a))?;
                    self.execute(&format!(
                        "tgtadm -C {cp} --lld {driver} --op bind --mode target --tid {tid} \
                         {flag} {}",
                        a.perl_string()
                    ))?;
                }
            }
            _ if TARGET_PARAMS.contains(&k) || k.starts_with("state") => {
                let l = as_list(v);
                if l.get(1).is_some_and(Value::has_length) {
                    self.execute(&format!(
                        "# Warning: only one {k} is allowed. Will only use the first one."
                    ))?;
                }
                self.execute(&format!(
                    "tgtadm -C {cp} --lld {driver} --mode target --op update --tid {tid} \
                     --name {k} --value {}",
                    l[0].perl_string()
                ))?;
            }
            _ => {}
        }
        Ok(())
    }
}

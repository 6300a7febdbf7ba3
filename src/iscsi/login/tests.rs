//! Login state machine tests: a scripted initiator drives `LoginSm` PDU by PDU.

use super::*;
use crate::config::snapshot::{Account, Acl, AclAddr, Redirect};
use crate::iscsi::chap::{decode_binary, encode_hex, ChapAlg};
use crate::iscsi::ids::Itt;
use crate::iscsi::redirect::CallbackError;
use std::collections::BTreeMap;

const TARGET: &str = "iqn.2024-01.com.example:disk1";
const INITIATOR: &str = "iqn.2024-01.com.example:host1";
const ISID: Isid = Isid([0x40, 0, 1, 0x37, 0, 0]);

fn ctx() -> LoginCtx {
    LoginCtx {
        local: "10.0.0.1:3260".parse().unwrap(),
        peer: "10.0.0.2:50000".parse().unwrap(),
        tpgt: 1,
        shard: 3,
    }
}

fn target(tid: u32, name: &str) -> TargetView {
    TargetView {
        tid,
        name: name.to_string(),
        ready: true,
        acl: Acl {
            addrs: vec![AclAddr::All],
            names: vec![],
        },
        chap: ChapAccounts::default(),
        params: TargetParams::default(),
        luns: BTreeMap::new(),
        lun_list: vec![],
        redirect: None,
    }
}

fn cfg_with(t: TargetView) -> ConfigSnapshot {
    let mut targets = BTreeMap::new();
    targets.insert(t.tid, Arc::new(t));
    ConfigSnapshot {
        generation: 1,
        system_ready: true,
        targets,
        discovery_chap: ChapAccounts::default(),
    }
}

fn cfg() -> ConfigSnapshot {
    cfg_with(target(1, TARGET))
}

fn chap_accounts(mutual: bool) -> ChapAccounts {
    ChapAccounts {
        incoming: vec![Account {
            user: "user".into(),
            secret: "secretsecret".into(),
        }],
        outgoing: mutual.then(|| Account {
            user: "tgtuser".into(),
            secret: "tgtsecrettgt".into(),
        }),
    }
}

fn req(csg: Stage, nsg: Option<Stage>) -> LoginReq {
    LoginReq {
        transit: nsg.is_some(),
        continue_: false,
        csg,
        nsg,
        version_max: 0,
        version_min: 0,
        isid: ISID,
        tsih: Tsih(0),
        itt: Itt(0x1234),
        cid: Cid(0),
        cmd_sn: CmdSn(100),
        exp_stat_sn: StatSn(5),
    }
}

fn kv(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut p = TextPairs::new();
    for (k, v) in pairs {
        p.push(k, v);
    }
    p.encode()
}

fn keys(step: &LoginStep) -> TextPairs {
    assert_eq!(step.bhs().unwrap().data_len(), step.data().len());
    TextPairs::parse(step.data()).unwrap()
}

fn status(step: &LoginStep) -> (u8, u8) {
    (step.bhs().unwrap().0[36], step.bhs().unwrap().0[37])
}

fn be32(b: &Bhs, at: usize) -> u32 {
    u32::from_be_bytes(b.0[at..at + 4].try_into().unwrap())
}

fn flags(step: &LoginStep) -> u8 {
    step.bhs().unwrap().0[1]
}

const SEC: Stage = Stage::Security;
const OP: Stage = Stage::Operational;
const FF: Stage = Stage::FullFeature;

fn normal_keys() -> Vec<(&'static str, &'static str)> {
    vec![
        ("InitiatorName", INITIATOR),
        ("TargetName", TARGET),
        ("SessionType", "Normal"),
    ]
}

fn expect_fail(step: LoginStep, st: (u8, u8)) {
    assert!(matches!(step, LoginStep::Fail { .. }), "{step:?}");
    assert_eq!(status(&step), st);
    assert_eq!(flags(&step) & 0x80, 0, "no transit on failure");
}

/// One-PDU login straight into the operational stage, as libiscsi does without CHAP.
fn login_op(cfg: &ConfigSnapshot, reg: &SessionRegistry, extra: &[(&str, &str)]) -> LoginStep {
    let mut sm = LoginSm::new(ctx());
    let mut k = normal_keys();
    k.extend_from_slice(extra);
    sm.on_pdu(&req(OP, Some(FF)), &kv(&k), cfg, reg)
}

#[test]
fn discovery_login_in_one_pdu() {
    let reg = SessionRegistry::new();
    let mut sm = LoginSm::new(ctx());
    let data = kv(&[
        ("InitiatorName", INITIATOR),
        ("SessionType", "Discovery"),
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("InitialR2T", "Yes"),
        ("MaxRecvDataSegmentLength", "262144"),
    ]);
    let step = sm.on_pdu(&req(OP, Some(FF)), &data, &cfg(), &reg);
    let k = keys(&step);
    let LoginStep::Done { bhs, session, .. } = step else {
        panic!("{step:?}")
    };
    assert_eq!(bhs.0[0] & 0x3f, 0x23);
    assert_eq!(bhs.0[1], 0x80 | (1 << 2) | 3);
    assert_eq!(be32(&bhs, 16), 0x1234, "ITT echoed");
    assert_eq!(be32(&bhs, 24), 5, "first StatSN");
    assert_eq!(be32(&bhs, 28), 100, "ExpCmdSN = login CmdSN");
    assert_eq!(
        be32(&bhs, 32),
        100 + 511,
        "MaxCmdSN = ExpCmdSN + window - 1"
    );
    assert_eq!(
        u16::from_be_bytes([bhs.0[14], bhs.0[15]]),
        1,
        "discovery TSIH"
    );
    assert_eq!(k.get("TargetPortalGroupTag"), Some("1"));
    assert_eq!(k.get("InitialR2T"), Some("Irrelevant"));
    assert_eq!(k.get("MaxRecvDataSegmentLength"), Some("8192"));
    assert_eq!(session.kind, SessionKind::Discovery);
    assert_eq!(session.params.max_xmit_data_segment_length, 262_144);
    assert_eq!(session.next_stat_sn, StatSn(6));
    assert_eq!(session.exp_cmd_sn, CmdSn(100));
    assert!(reg.is_empty(), "discovery sessions are not registered");
}

#[test]
fn normal_login_through_both_stages() {
    let reg = SessionRegistry::new();
    let c = cfg();
    let mut sm = LoginSm::new(ctx());
    let mut k = normal_keys();
    k.push(("AuthMethod", "None"));
    k.push(("InitiatorAlias", "host1"));
    let step = sm.on_pdu(&req(SEC, Some(OP)), &kv(&k), &c, &reg);
    assert!(matches!(step, LoginStep::Continue { .. }));
    assert_eq!(flags(&step), 0x80 | 1, "T, CSG=0, NSG=1");
    assert_eq!(keys(&step).get("AuthMethod"), Some("None"));
    let step = sm.on_pdu(
        &req(OP, Some(FF)),
        &kv(&[
            ("HeaderDigest", "CRC32C,None"),
            ("MaxBurstLength", "16776192"),
            ("MaxRecvDataSegmentLength", "65536"),
        ]),
        &c,
        &reg,
    );
    let k = keys(&step);
    assert_eq!(k.get("HeaderDigest"), Some("None"));
    assert_eq!(k.get("MaxBurstLength"), Some("262144"));
    assert_eq!(k.get("TargetPortalGroupTag"), None, "sent once");
    let LoginStep::Done { bhs, session, .. } = step else {
        panic!()
    };
    assert_eq!(be32(&bhs, 24), 6);
    let tsih = Tsih(u16::from_be_bytes([bhs.0[14], bhs.0[15]]));
    assert_ne!(tsih.0, 0);
    assert_eq!(session.tsih, tsih);
    assert_eq!(session.kind, SessionKind::Normal { tid: 1 });
    assert_eq!(session.initiator_alias.as_deref(), Some("host1"));
    assert_eq!(
        session.initiator_port,
        format!("{INITIATOR},i,0x400001370000")
    );
    assert_eq!(session.params.max_xmit_data_segment_length, 65536);
    assert_eq!(session.reinstate, None);
    assert_eq!(reg.lookup(1, tsih).unwrap().shard, 3);
}

#[test]
fn security_straight_to_full_feature() {
    let reg = SessionRegistry::new();
    let mut sm = LoginSm::new(ctx());
    let mut k = normal_keys();
    k.push(("AuthMethod", "None"));
    let step = sm.on_pdu(&req(SEC, Some(FF)), &kv(&k), &cfg(), &reg);
    assert!(matches!(step, LoginStep::Done { .. }), "{step:?}");
    assert_eq!(flags(&step), 0x80 | 3);
}

/// Runs the CHAP exchange libiscsi performs; returns the final step.
fn chap_login(c: &ConfigSnapshot, secret: &str, mutual: Option<&[u8]>) -> LoginStep {
    let reg = SessionRegistry::new();
    let mut sm = LoginSm::new(ctx());
    let mut k = normal_keys();
    k.push(("AuthMethod", "CHAP,None"));
    let step = sm.on_pdu(&req(SEC, Some(OP)), &kv(&k), c, &reg);
    assert_eq!(keys(&step).get("AuthMethod"), Some("CHAP"));
    assert_eq!(flags(&step) & 0x80, 0, "no transit while CHAP runs");
    let step = sm.on_pdu(&req(SEC, None), &kv(&[("CHAP_A", "7,5")]), c, &reg);
    let k = keys(&step);
    assert_eq!(k.get("CHAP_A"), Some("7"));
    let id: u8 = k.get("CHAP_I").unwrap().parse().unwrap();
    let challenge = decode_binary(k.get("CHAP_C").unwrap()).unwrap();
    let r = encode_hex(&ChapAlg::Sha1.response(id, secret.as_bytes(), &challenge));
    let mut resp = vec![
        ("CHAP_N".to_string(), "user".to_string()),
        ("CHAP_R".to_string(), r),
    ];
    if let Some(ch) = mutual {
        resp.push(("CHAP_I".into(), "9".into()));
        resp.push(("CHAP_C".into(), encode_hex(ch)));
    }
    let resp: Vec<(&str, &str)> = resp.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let step = sm.on_pdu(&req(SEC, Some(OP)), &kv(&resp), c, &reg);
    if !matches!(step, LoginStep::Continue { .. }) {
        return step;
    }
    assert_eq!(flags(&step), 0x80 | 1);
    if let Some(ch) = mutual {
        let k = keys(&step);
        assert_eq!(k.get("CHAP_N"), Some("tgtuser"));
        let want = encode_hex(&ChapAlg::Sha1.response(9, b"tgtsecrettgt", ch));
        assert_eq!(k.get("CHAP_R"), Some(want.as_str()));
    }
    sm.on_pdu(
        &req(OP, Some(FF)),
        &kv(&[("MaxRecvDataSegmentLength", "8192")]),
        c,
        &reg,
    )
}

#[test]
fn chap_one_way_and_mutual() {
    let mut t = target(1, TARGET);
    t.chap = chap_accounts(true);
    let c = cfg_with(t);
    assert!(matches!(
        chap_login(&c, "secretsecret", None),
        LoginStep::Done { .. }
    ));
    assert!(matches!(
        chap_login(&c, "secretsecret", Some(&[7u8; 32])),
        LoginStep::Done { .. }
    ));
}

/// Issue 11 item 8: AuthMethod or a CHAP key given twice is a protocol error (RFC 7143 §6.2),
/// never a second try: a right CHAP_R beside a wrong one must not authenticate.
#[test]
fn duplicate_security_keys_are_refused() {
    let mut t = target(1, TARGET);
    t.chap = chap_accounts(false);
    let c = cfg_with(t);
    let reg = SessionRegistry::new();
    // AuthMethod twice in the leading text.
    let mut k = normal_keys();
    k.extend([("AuthMethod", "None"), ("AuthMethod", "CHAP")]);
    let step = LoginSm::new(ctx()).on_pdu(&req(SEC, None), &kv(&k), &c, &reg);
    expect_fail(step, status::INITIATOR_ERROR);
    // AuthMethod again once CHAP runs; CHAP_R twice.
    for again in ["AuthMethod", "CHAP_R"] {
        let mut sm = LoginSm::new(ctx());
        let mut k = normal_keys();
        k.push(("AuthMethod", "CHAP"));
        sm.on_pdu(&req(SEC, None), &kv(&k), &c, &reg);
        let mut a = vec![("CHAP_A", "5")];
        if again == "AuthMethod" {
            a.push(("AuthMethod", "None"));
        }
        let step = sm.on_pdu(&req(SEC, None), &kv(&a), &c, &reg);
        if again == "AuthMethod" {
            expect_fail(step, status::INITIATOR_ERROR);
            continue;
        }
        let k = keys(&step);
        let id: u8 = k.get("CHAP_I").unwrap().parse().unwrap();
        let challenge = decode_binary(k.get("CHAP_C").unwrap()).unwrap();
        let right = encode_hex(&ChapAlg::Md5.response(id, b"secretsecret", &challenge));
        let wrong = encode_hex(&[0u8; 16]);
        let resp = [
            ("CHAP_N", "user"),
            ("CHAP_R", right.as_str()),
            ("CHAP_R", wrong.as_str()),
        ];
        let step = sm.on_pdu(&req(SEC, Some(OP)), &kv(&resp), &c, &reg);
        expect_fail(step, status::INITIATOR_ERROR);
    }
}

#[test]
fn chap_wrong_secret_fails_authentication() {
    let mut t = target(1, TARGET);
    t.chap = chap_accounts(false);
    let c = cfg_with(t);
    expect_fail(chap_login(&c, "not the secret", None), status::AUTH_FAILED);
    // Mutual CHAP asked of a target without an outgoing account.
    expect_fail(
        chap_login(&c, "secretsecret", Some(&[7u8; 32])),
        status::AUTH_FAILED,
    );
}

#[test]
fn chap_required_cannot_be_skipped() {
    let mut t = target(1, TARGET);
    t.chap = chap_accounts(false);
    let c = cfg_with(t);
    let reg = SessionRegistry::new();
    let mut sm = LoginSm::new(ctx());
    let mut k = normal_keys();
    k.push(("AuthMethod", "None"));
    let step = sm.on_pdu(&req(SEC, Some(OP)), &kv(&k), &c, &reg);
    expect_fail(step, status::AUTH_FAILED);
    expect_fail(login_op(&c, &reg, &[]), status::AUTH_FAILED);
    let mut sm = LoginSm::new(ctx());
    let step = sm.on_pdu(&req(SEC, Some(OP)), &kv(&normal_keys()), &c, &reg);
    expect_fail(step, status::AUTH_FAILED);
}

#[test]
fn discovery_chap_uses_global_accounts() {
    let mut c = cfg();
    c.discovery_chap = chap_accounts(false);
    let reg = SessionRegistry::new();
    let mut sm = LoginSm::new(ctx());
    let step = sm.on_pdu(
        &req(OP, Some(FF)),
        &kv(&[("InitiatorName", INITIATOR), ("SessionType", "Discovery")]),
        &c,
        &reg,
    );
    expect_fail(step, status::AUTH_FAILED);
}

#[test]
fn failure_statuses() {
    let reg = SessionRegistry::new();
    let c = cfg();
    let one = |c: &ConfigSnapshot, r: LoginReq, k: &[(&str, &str)]| {
        LoginSm::new(ctx()).on_pdu(&r, &kv(k), c, &reg)
    };
    let base = normal_keys();
    // Unknown target.
    expect_fail(
        one(
            &c,
            req(OP, Some(FF)),
            &[("InitiatorName", INITIATOR), ("TargetName", "iqn.nope")],
        ),
        status::NOT_FOUND,
    );
    // Missing names.
    expect_fail(
        one(&c, req(OP, Some(FF)), &[("TargetName", TARGET)]),
        status::MISSING_PARAMETER,
    );
    expect_fail(
        one(&c, req(OP, Some(FF)), &[("InitiatorName", INITIATOR)]),
        status::MISSING_PARAMETER,
    );
    // Bad session type.
    expect_fail(
        one(
            &c,
            req(OP, Some(FF)),
            &[("InitiatorName", INITIATOR), ("SessionType", "Weird")],
        ),
        status::SESSION_TYPE_UNSUPPORTED,
    );
    // Version.
    let mut r = req(OP, Some(FF));
    r.version_min = 1;
    r.version_max = 2;
    expect_fail(one(&c, r, &base), status::UNSUPPORTED_VERSION);
    // System offline.
    let mut off = cfg();
    off.system_ready = false;
    expect_fail(
        one(&off, req(OP, Some(FF)), &base),
        status::SERVICE_UNAVAILABLE,
    );
    // Target offline.
    let mut t = target(1, TARGET);
    t.ready = false;
    expect_fail(
        one(&cfg_with(t), req(OP, Some(FF)), &base),
        status::SERVICE_UNAVAILABLE,
    );
    // ACL refuses: "not found", as tgt.
    let mut t = target(1, TARGET);
    t.acl = Acl {
        addrs: vec![AclAddr::Exact("10.9.9.9".parse().unwrap())],
        names: vec![],
    };
    expect_fail(
        one(&cfg_with(t.clone()), req(OP, Some(FF)), &base),
        status::NOT_FOUND,
    );
    t.acl.names.push(INITIATOR.into());
    assert!(matches!(
        one(&cfg_with(t), req(OP, Some(FF)), &base),
        LoginStep::Done { .. }
    ));
    // Non-zero TSIH for no session.
    let mut r = req(OP, Some(FF));
    r.tsih = Tsih(77);
    expect_fail(one(&c, r, &base), status::SESSION_DOES_NOT_EXIST);
    // C and T together.
    let mut r = req(OP, Some(FF));
    r.continue_ = true;
    expect_fail(one(&c, r, &base), status::INITIATOR_ERROR);
    // First PDU in the full-feature "stage".
    expect_fail(one(&c, req(FF, None), &base), status::INITIATOR_ERROR);
    // Transit backwards.
    expect_fail(one(&c, req(OP, Some(SEC)), &base), status::INITIATOR_ERROR);
    // Duplicate login key and duplicate operational key.
    let mut k = base.clone();
    k.push(("InitiatorName", "iqn.other"));
    expect_fail(one(&c, req(OP, Some(FF)), &k), status::INITIATOR_ERROR);
    let mut k = base.clone();
    k.push(("MaxBurstLength", "512"));
    k.push(("MaxBurstLength", "512"));
    expect_fail(one(&c, req(OP, Some(FF)), &k), status::INITIATOR_ERROR);
    // Security keys in the operational stage.
    let mut k = base.clone();
    k.push(("AuthMethod", "None"));
    expect_fail(one(&c, req(OP, Some(FF)), &k), status::INITIATOR_ERROR);
    // Unparsable text.
    let step = LoginSm::new(ctx()).on_pdu(&req(OP, Some(FF)), b"InitiatorName", &c, &reg);
    expect_fail(step, status::INITIATOR_ERROR);
    // No acceptable AuthMethod.
    let mut k = base.clone();
    k.push(("AuthMethod", "SRP"));
    let step = one(&c, req(SEC, Some(OP)), &k);
    expect_fail(step, status::AUTH_FAILED);
}

fn static_redirect(address: &str, permanent: bool) -> TargetView {
    let mut t = target(1, TARGET);
    t.redirect = Some(Redirect::Static {
        address: address.into(),
        port: 3261,
        permanent,
    });
    t
}

#[test]
fn redirects_carry_target_address() {
    let reg = SessionRegistry::new();
    for (permanent, st) in [
        (false, status::TARGET_MOVED_TEMPORARILY),
        (true, status::TARGET_MOVED_PERMANENTLY),
    ] {
        for address in ["fd00::5", "[fd00::5]"] {
            let step = login_op(&cfg_with(static_redirect(address, permanent)), &reg, &[]);
            assert_eq!(keys(&step).get("TargetAddress"), Some("[fd00::5]:3261"));
            expect_fail(step, st);
        }
    }
}

#[test]
fn static_redirect_comes_before_state_and_acl() {
    let reg = SessionRegistry::new();
    let mut t = static_redirect("10.0.0.9", false);
    t.ready = false;
    t.acl = Acl::default();
    let step = login_op(&cfg_with(t), &reg, &[]);
    assert_eq!(keys(&step).get("TargetAddress"), Some("10.0.0.9:3261"));
    expect_fail(step, status::TARGET_MOVED_TEMPORARILY);
}

#[test]
fn static_redirects_tgt_does_not_follow() {
    let reg = SessionRegistry::new();
    // A host name (tgt: getaddrinfo AI_NUMERICHOST fails), or the initiator's own address
    // (ctx() peer is 10.0.0.2): the login carries on as if there were no redirect.
    for address in ["node2.example", "10.0.0.2", "[10.0.0.2"] {
        let step = login_op(&cfg_with(static_redirect(address, true)), &reg, &[]);
        assert!(
            matches!(step, LoginStep::Done { .. }),
            "{address}: {step:?}"
        );
    }
}

/// A login to a target with a callback, parked: returns the SM and the argv it asked for.
fn parked(cfg: &ConfigSnapshot, reg: &SessionRegistry) -> (LoginSm, Vec<String>) {
    let mut sm = LoginSm::new(ctx());
    let step = sm.on_pdu(&req(OP, Some(FF)), &kv(&normal_keys()), cfg, reg);
    let LoginStep::RunCallback { argv } = step else {
        panic!("{step:?}")
    };
    assert_eq!(
        sm.stat_sn,
        StatSn(5),
        "nothing answered while the callback runs"
    );
    (sm, argv)
}

fn callback_target(tname: &str) -> TargetView {
    let mut t = target(1, tname);
    t.redirect = Some(Redirect::Callback {
        argv: vec!["/usr/lib/pick".into(), "--pool".into(), "a".into()],
    });
    t
}

#[test]
fn callback_runs_with_target_name_and_initiator_address() {
    let reg = SessionRegistry::new();
    // The configured name goes to the callback, whatever case the initiator used.
    let c = cfg_with(callback_target(&TARGET.to_uppercase()));
    let (_, argv) = parked(&c, &reg);
    assert_eq!(
        argv,
        vec![
            "/usr/lib/pick".to_string(),
            "--pool".into(),
            "a".into(),
            TARGET.to_uppercase(),
            "10.0.0.2".into()
        ]
    );
}

#[test]
fn callback_answers_redirect() {
    let reg = SessionRegistry::new();
    let c = cfg_with(callback_target(TARGET));
    for (out, st, addr) in [
        (
            &b"10.0.0.7:3261:Temporary\n"[..],
            status::TARGET_MOVED_TEMPORARILY,
            "10.0.0.7:3261",
        ),
        (
            b"[fd00::7]:3262:Permanent",
            status::TARGET_MOVED_PERMANENTLY,
            "[fd00::7]:3262",
        ),
    ] {
        let (mut sm, _) = parked(&c, &reg);
        let step = sm.on_callback(Ok(out.to_vec()), &c, &reg).unwrap();
        assert_eq!(keys(&step).get("TargetAddress"), Some(addr));
        assert_eq!(
            be32(step.bhs().unwrap(), 24),
            5,
            "the first response's StatSN"
        );
        expect_fail(step, st);
    }
}

#[test]
fn callback_failures_are_target_errors() {
    let reg = SessionRegistry::new();
    let c = cfg_with(callback_target(TARGET));
    for result in [
        Ok(b"garbage\n".to_vec()),
        Ok(Vec::new()),
        Ok(b"10.0.0.7:port:Temporary".to_vec()),
        Err(CallbackError::Timeout(100)),
        Err(CallbackError::Busy(64)),
        Err(CallbackError::Spawn(std::io::ErrorKind::NotFound)),
    ] {
        let (mut sm, _) = parked(&c, &reg);
        let step = sm.on_callback(result, &c, &reg).unwrap();
        assert!(keys(&step).get("TargetAddress").is_none());
        expect_fail(step, status::TARGET_ERROR);
    }
}

#[test]
fn callback_without_redirect_carries_on_against_current_config() {
    let reg = SessionRegistry::new();
    let c = cfg_with(callback_target(TARGET));
    // A host name or the initiator's own address: the login goes on, in one PDU here.
    for out in [&b"node2:3260:Temporary"[..], b"10.0.0.2:3260:Permanent"] {
        let (mut sm, _) = parked(&c, &reg);
        let step = sm.on_callback(Ok(out.to_vec()), &c, &reg).unwrap();
        let k = keys(&step);
        assert_eq!(k.get("TargetPortalGroupTag"), Some("1"));
        let LoginStep::Done { session, .. } = step else {
            panic!("{step:?}")
        };
        assert_eq!(session.kind, SessionKind::Normal { tid: 1 });
    }
    // The state and ACL checks read the configuration current when the callback ends.
    let (mut sm, _) = parked(&c, &reg);
    let mut offline = callback_target(TARGET);
    offline.ready = false;
    let step = sm
        .on_callback(
            Ok(b"node2:3260:Temporary".to_vec()),
            &cfg_with(offline),
            &reg,
        )
        .unwrap();
    expect_fail(step, status::SERVICE_UNAVAILABLE);
    let (mut sm, _) = parked(&c, &reg);
    let step = sm
        .on_callback(
            Ok(b"node2:3260:Temporary".to_vec()),
            &cfg_with(target(2, "iqn.other")),
            &reg,
        )
        .unwrap();
    expect_fail(step, status::NOT_FOUND);
}

#[test]
fn callback_results_only_for_a_parked_login() {
    let reg = SessionRegistry::new();
    let c = cfg_with(callback_target(TARGET));
    // Before any PDU, and after the answer: a result is stale.
    let mut sm = LoginSm::new(ctx());
    assert!(sm.on_callback(Ok(Vec::new()), &c, &reg).is_none());
    let (mut sm, _) = parked(&c, &reg);
    // A PDU while parked (the shard never feeds one) ends the login.
    expect_fail(
        sm.on_pdu(&req(OP, Some(FF)), &[], &c, &reg),
        status::INITIATOR_ERROR,
    );
    assert!(sm.on_callback(Ok(Vec::new()), &c, &reg).is_none());
    // Discovery sessions never run the callback.
    let mut sm = LoginSm::new(ctx());
    let step = sm.on_pdu(
        &req(OP, Some(FF)),
        &kv(&[("InitiatorName", INITIATOR), ("SessionType", "Discovery")]),
        &c,
        &reg,
    );
    assert!(matches!(step, LoginStep::Done { .. }), "{step:?}");
}

#[test]
fn later_pdus_are_checked_against_the_first() {
    let reg = SessionRegistry::new();
    let c = cfg();
    let start = |sm: &mut LoginSm| {
        let mut k = normal_keys();
        k.push(("AuthMethod", "None"));
        let s = sm.on_pdu(&req(SEC, None), &kv(&k), &c, &reg);
        assert!(matches!(s, LoginStep::Continue { .. }));
    };
    // ISID changes.
    let mut sm = LoginSm::new(ctx());
    start(&mut sm);
    let mut r = req(SEC, Some(OP));
    r.isid = Isid([0; 6]);
    expect_fail(sm.on_pdu(&r, &[], &c, &reg), status::INITIATOR_ERROR);
    // After a failure, nothing more is accepted.
    expect_fail(
        sm.on_pdu(&req(SEC, Some(OP)), &[], &c, &reg),
        status::INVALID_DURING_LOGIN,
    );
    // Wrong current stage.
    let mut sm = LoginSm::new(ctx());
    start(&mut sm);
    expect_fail(
        sm.on_pdu(&req(OP, Some(FF)), &[], &c, &reg),
        status::INITIATOR_ERROR,
    );
    // StatSN advances per response; a staying response has no T bit.
    let mut sm = LoginSm::new(ctx());
    start(&mut sm);
    let s = sm.on_pdu(&req(SEC, Some(OP)), &[], &c, &reg);
    assert_eq!(be32(s.bhs().unwrap(), 24), 6);
    assert_eq!(flags(&s), 0x81);
}

#[test]
fn continued_login_requests_are_joined() {
    let reg = SessionRegistry::new();
    let c = cfg();
    let mut sm = LoginSm::new(ctx());
    let data = kv(&normal_keys());
    let (a, b) = data.split_at(10); // mid-key
    let mut r = req(OP, None);
    r.continue_ = true;
    let step = sm.on_pdu(&r, a, &c, &reg);
    assert!(matches!(step, LoginStep::Continue { .. }));
    assert!(step.data().is_empty());
    assert_eq!(flags(&step) & 0xc0, 0);
    let step = sm.on_pdu(&req(OP, Some(FF)), b, &c, &reg);
    assert!(matches!(step, LoginStep::Done { .. }), "{step:?}");
    assert_eq!(be32(step.bhs().unwrap(), 24), 6);
}

#[test]
fn long_responses_are_split_with_the_c_bit() {
    let reg = SessionRegistry::new();
    let c = cfg();
    let mut sm = LoginSm::new(ctx());
    let names: Vec<String> = (0..200)
        .map(|i| format!("X-com.example.{i:03}.{}", "k".repeat(40)))
        .collect();
    let mut k = normal_keys();
    k.extend(names.iter().map(|n| (n.as_str(), "1")));
    let step = sm.on_pdu(&req(OP, Some(FF)), &kv(&k), &c, &reg);
    let mut text = step.data().to_vec();
    assert!(matches!(step, LoginStep::Continue { .. }));
    assert_eq!(step.data().len(), LOGIN_MAX_DATA);
    assert_eq!(flags(&step) & 0xc0, 0x40, "C set, T clear");
    let mut n = 0;
    let last = loop {
        n += 1;
        let s = sm.on_pdu(&req(OP, None), &[], &c, &reg);
        text.extend_from_slice(s.data());
        assert!(s.data().len() <= LOGIN_MAX_DATA);
        if !matches!(s, LoginStep::Continue { .. }) {
            break s;
        }
        assert!(n < 5);
    };
    assert!(matches!(last, LoginStep::Done { .. }), "{last:?}");
    assert_eq!(flags(&last), 0x80 | (1 << 2) | 3);
    let all = TextPairs::parse(&text).unwrap();
    assert_eq!(
        all.iter().filter(|(_, v)| *v == "NotUnderstood").count(),
        200
    );
}

/// Issue 11 item 8: the session used to be registered when the final response was built, so
/// a connection lost (or refused) while its pieces went out left a TSIH nobody unregisters.
#[test]
fn a_session_is_registered_only_with_its_last_response_piece() {
    let reg = SessionRegistry::new();
    let c = cfg();
    let long: Vec<String> = (0..200)
        .map(|i| format!("X-com.example.{i:03}.{}", "k".repeat(40)))
        .collect();
    let mut k = normal_keys();
    k.extend(long.iter().map(|n| (n.as_str(), "1")));
    // The connection drops after the first piece.
    let mut sm = LoginSm::new(ctx());
    let step = sm.on_pdu(&req(OP, Some(FF)), &kv(&k), &c, &reg);
    assert!(matches!(step, LoginStep::Continue { .. }), "{step:?}");
    drop(sm);
    assert_eq!(
        reg.len(),
        0,
        "no session registered for a login that never finished"
    );
    // The initiator breaks the exchange (data on a fetch): refused, nothing registered.
    let mut sm = LoginSm::new(ctx());
    sm.on_pdu(&req(OP, Some(FF)), &kv(&k), &c, &reg);
    expect_fail(
        sm.on_pdu(&req(OP, None), b"Junk=1\0", &c, &reg),
        status::INITIATOR_ERROR,
    );
    assert_eq!(reg.len(), 0);
    // Fetched to the end: registered once, under the TSIH the last piece carries.
    let mut sm = LoginSm::new(ctx());
    let mut step = sm.on_pdu(&req(OP, Some(FF)), &kv(&k), &c, &reg);
    for _ in 0..8 {
        if !matches!(step, LoginStep::Continue { .. }) {
            break;
        }
        assert_eq!(reg.len(), 0);
        step = sm.on_pdu(&req(OP, None), &[], &c, &reg);
    }
    let LoginStep::Done { bhs, session, .. } = step else {
        panic!("{step:?}")
    };
    assert_eq!(reg.len(), 1);
    assert_ne!(session.tsih.0, 0);
    assert_eq!(u16::from_be_bytes([bhs.0[14], bhs.0[15]]), session.tsih.0);
    assert!(reg.lookup(1, session.tsih).is_some());
}

#[test]
fn target_offers_force_a_second_round() {
    let reg = SessionRegistry::new();
    let mut t = target(1, TARGET);
    t.params.set("MaxBurstLength", "1048576").unwrap();
    let c = cfg_with(t);
    let mut sm = LoginSm::new(ctx());
    let step = sm.on_pdu(&req(OP, Some(FF)), &kv(&normal_keys()), &c, &reg);
    assert!(matches!(step, LoginStep::Continue { .. }));
    assert_eq!(flags(&step) & 0x80, 0, "stays until answered");
    assert_eq!(keys(&step).get("MaxBurstLength"), Some("1048576"));
    let step = sm.on_pdu(
        &req(OP, Some(FF)),
        &kv(&[("MaxBurstLength", "524288")]),
        &c,
        &reg,
    );
    let LoginStep::Done { session, .. } = step else {
        panic!("{step:?}")
    };
    assert_eq!(session.params.max_burst_length, 524_288);
}

#[test]
fn reinstatement_and_second_connection() {
    let reg = SessionRegistry::new();
    let c = cfg();
    let LoginStep::Done { session: first, .. } = login_op(&c, &reg, &[]) else {
        panic!()
    };
    let LoginStep::Done {
        session: second, ..
    } = login_op(&c, &reg, &[])
    else {
        panic!()
    };
    assert_eq!(second.reinstate, Some((3, 1, first.tsih)));
    assert_ne!(second.tsih, first.tsih);
    // Adding a connection to the live session: refused (MaxConnections=1).
    let mut r = req(OP, Some(FF));
    r.tsih = second.tsih;
    let step = LoginSm::new(ctx()).on_pdu(&r, &kv(&normal_keys()), &c, &reg);
    expect_fail(step, status::TOO_MANY_CONNECTIONS);
    // The replaced session's TSIH no longer exists.
    let mut r = req(OP, Some(FF));
    r.tsih = first.tsih;
    let step = LoginSm::new(ctx()).on_pdu(&r, &kv(&normal_keys()), &c, &reg);
    expect_fail(step, status::SESSION_DOES_NOT_EXIST);
}

#[test]
fn too_many_pdus_is_bounded() {
    let reg = SessionRegistry::new();
    let c = cfg();
    let mut sm = LoginSm::new(ctx());
    let mut k = normal_keys();
    k.push(("AuthMethod", "None"));
    sm.on_pdu(&req(SEC, None), &kv(&k), &c, &reg);
    let mut last = None;
    for _ in 0..MAX_LOGIN_PDUS {
        let s = sm.on_pdu(&req(SEC, None), &[], &c, &reg);
        if matches!(s, LoginStep::Fail { .. }) {
            last = Some(s);
            break;
        }
    }
    expect_fail(last.expect("bounded"), status::INITIATOR_ERROR);
}

proptest::proptest! {
    #[test]
    fn random_pdus_never_panic(
        pdus in proptest::collection::vec(
            (0u8..4, 0u8..4, proptest::bool::ANY, proptest::bool::ANY, 0u16..3,
             proptest::collection::vec(proptest::sample::select(vec![
                 b'=', 0, b'A', b'N', b'5', b',', b'x', b'I', b'T', b'C', b'0',
             ]), 0..64)),
            1..8),
        prefix in proptest::bool::ANY,
    ) {
        let reg = SessionRegistry::new();
        let c = cfg();
        let mut sm = LoginSm::new(ctx());
        for (i, (csg, nsg, t, cont, tsih, noise)) in pdus.into_iter().enumerate() {
            let stage = |b| match b { 0 => Some(SEC), 1 => Some(OP), 3 => Some(FF), _ => None };
            let mut r = req(stage(csg).unwrap_or(SEC), stage(nsg));
            r.transit = t;
            r.continue_ = cont;
            r.tsih = Tsih(tsih);
            let mut data = if i == 0 && prefix { kv(&normal_keys()) } else { Vec::new() };
            data.extend_from_slice(&noise);
            let step = sm.on_pdu(&r, &data, &c, &reg);
            proptest::prop_assert_eq!(step.bhs().unwrap().data_len(), step.data().len());
            proptest::prop_assert!(step.data().len() <= LOGIN_MAX_DATA);
            if !matches!(step, LoginStep::Continue { .. }) {
                break;
            }
        }
    }
}

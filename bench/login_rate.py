#!/usr/bin/env python3
"""Sequential iSCSI logins from one client: connect, one Login Request (operational stage
straight to full feature phase), Logout (LOGOUT=0: none), close; N times. Prints logins/s and the latency
percentiles of the login round trip (connect to final Login Response), as one JSON line.

usage: login_rate.py HOST PORT TARGET_IQN [N]
"""
import json
import os
import socket
import sys
import time


def read_pdu(s):
    h = b""
    while len(h) < 48:
        x = s.recv(48 - len(h))
        if not x:
            raise ConnectionError("target closed the connection")
        h += x
    n = (int.from_bytes(h[5:8], "big") + 3) // 4 * 4 + h[4] * 4
    d = b""
    while len(d) < n:
        x = s.recv(n - len(d))
        if not x:
            raise ConnectionError("target closed the connection")
        d += x
    return h, d


def login_pdu(keys, isid):
    h = bytearray(48)
    h[0] = 0x43
    h[1] = 0x80 | (1 << 2) | 3
    h[5:8] = len(keys).to_bytes(3, "big")
    h[8:14] = bytes([0x80, 0, 0, 0, (isid >> 8) & 0xFF, isid & 0xFF])
    h[24:28] = (1).to_bytes(4, "big")
    return bytes(h) + keys + b"\0" * (-len(keys) % 4)


def logout_pdu(cmd_sn, exp_stat_sn):
    h = bytearray(48)
    h[0] = 0x46
    h[1] = 0x80
    h[16:20] = (1).to_bytes(4, "big")
    h[24:28] = cmd_sn.to_bytes(4, "big")
    h[28:32] = exp_stat_sn.to_bytes(4, "big")
    return bytes(h)


LOGOUT = os.environ.get("LOGOUT", "1") != "0"


def one(host, port, target, i):
    t0 = time.perf_counter()
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    keys = (f"InitiatorName=iqn.2026-11.bench:login\0SessionType=Normal\0TargetName={target}\0"
            "HeaderDigest=None\0DataDigest=None\0").encode()
    for rnd in range(4):
        s.sendall(login_pdu(keys if rnd == 0 else b"", i % 65536))
        h, _ = read_pdu(s)
        if h[0] & 0x3F != 0x23 or h[36] != 0:
            raise RuntimeError(f"login {i} failed: opcode {h[0]:#x} status {h[36]:#x}/{h[37]:#x}")
        if h[1] & 0x83 == 0x83:
            break
    else:
        raise RuntimeError(f"login {i}: no full feature phase")
    t1 = time.perf_counter()
    if not LOGOUT:
        s.close()
        return t1 - t0
    s.sendall(logout_pdu(int.from_bytes(h[28:32], "big"), int.from_bytes(h[24:28], "big") + 1))
    h, _ = read_pdu(s)
    if h[0] & 0x3F != 0x26:
        raise RuntimeError(f"logout {i}: opcode {h[0]:#x}")
    s.close()
    return t1 - t0


def main():
    host, port, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    for i in range(20):  # warm-up
        one(host, port, target, 60000 + i)
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        lat.append(one(host, port, target, i))
    wall = time.perf_counter() - t0
    lat.sort()
    pct = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6, 1)
    print(json.dumps({"logins": n, "seconds": round(wall, 3), "per_s": round(n / wall, 1),
                      "login_us_p50": pct(0.5), "login_us_p99": pct(0.99)}))


if __name__ == "__main__":
    main()

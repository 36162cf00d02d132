#!/usr/bin/env python3
"""Checks the XML dictionaries under dictionaries/ (python3 stdlib only).

What it asserts:
  * each file is well-formed and has the shape the Rust loader reads (<diameter>/<application>/
    <avp>|<command>, known data types, flag lists made of V/M/P or "-");
  * every row of ../shared/spec/avp-table.tsv is defined once, in the file its application column
    names, with the same name, code, vendor, type and M-bit rule;
  * no (code, vendor) pair and no name is defined twice across the four files, and an
    application id has the same name in every file (the loader keeps only one);
  * every <rule avp="X"> names a defined AVP (or the wildcard "AVP"); fixed rules come first;
  * every AVP printed in ../shared/fixtures/*.tshark.txt (`AVP: Name(code)`, bar Unknown(99999))
    is defined under that name and code;
  * the fixture messages validate against the command grammars the way the codec's golden test
    expects (the good ones pass; the bad ones fail with the Result-Code their recorded answer shows).

Usage: scripts/check-dictionaries.py [--shared DIR]   (default: <repo>/../shared, then /work/shared)
Exit status 0 when every check passes; otherwise the failures are listed and the status is 1.
"""

import argparse
import csv
import glob
import os
import re
import sys
import xml.etree.ElementTree as ET

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ["base.xml", "credit-control.xml", "3gpp-ro.xml", "3gpp-gy.xml", "oma-im.xml"]
TYPES = {
    "OctetString", "Integer32", "Integer64", "Unsigned32", "Unsigned64", "Float32", "Float64",
    "Grouped", "Address", "Time", "UTF8String", "DiameterIdentity", "DiameterURI", "Enumerated",
    "IPFilterRule", "QoSFilterRule",
}
FIXED_LEN = {"Integer32": 4, "Unsigned32": 4, "Float32": 4, "Enumerated": 4, "Time": 4,
             "Integer64": 8, "Unsigned64": 8, "Float64": 8}
# TSV application column -> file; the OMA IM AVPs go to oma-im.xml whatever the column says.
APP_FILE = {"base": "base.xml", "dcca": "credit-control.xml", "3gpp-ro": "3gpp-ro.xml"}
OMA_CODES = {1256, 2101, 2102, 2103, 2104, 2110, 2111, 2112, 2113, 2114, 2115, 2116, 2117}

errors = []


def fail(msg):
    errors.append(msg)


class Avp:
    def __init__(self, file, el):
        self.file = file
        self.name = el.get("name")
        self.code = int(el.get("code"))
        self.vendor = int(el.get("vendor-id", "0"))
        self.flags = {k: split_flags(el.get(k, "-")) for k in ("must", "may", "must-not")}
        if "M" in self.flags["must"]:
            self.m_rule = "must"
        elif "M" in self.flags["must-not"]:
            self.m_rule = "mustnot"
        else:
            self.m_rule = "may"
        data = el.find("data")
        self.type = data.get("type") if data is not None else None
        self.items = [(int(i.get("code")), i.get("name")) for i in data.findall("item")] if data is not None else []
        self.rules = [Rule(r) for r in data.findall("rule")] if data is not None else []


class Rule:
    def __init__(self, el):
        self.avp = el.get("avp")
        self.required = el.get("required", "false")
        self.min = int(el.get("min")) if el.get("min") is not None else (1 if self.required == "true" else 0)
        self.max = int(el.get("max")) if el.get("max") is not None else None
        self.fixed = el.get("fixed") == "true"
        self.attrs = dict(el.attrib)


def split_flags(s):
    s = s.strip()
    return set() if s == "-" else {x.strip() for x in s.split(",")}


def load(dict_dir):
    avps, commands, apps, app_names = [], [], {}, {}
    for fn in FILES:
        path = os.path.join(dict_dir, fn)
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as e:
            fail(f"{fn}: not well-formed / unreadable: {e}")
            continue
        if root.tag != "diameter":
            fail(f"{fn}: root element is <{root.tag}>, expected <diameter>")
        for app in root:
            if app.tag != "application":
                fail(f"{fn}: unexpected <{app.tag}> under <diameter>")
                continue
            app_id = int(app.get("id"))
            apps.setdefault(fn, set()).add(app_id)
            # The loader keeps one name per application id (a later file overwrites it).
            name = app.get("name", "")
            if app_names.setdefault(app_id, (name, fn))[0] != name:
                first, where = app_names[app_id]
                fail(f"{fn}: application {app_id} named {name!r}, {where} calls it {first!r}")
            for node in app:
                if node.tag == "avp":
                    a = Avp(fn, node)
                    a.app = app_id
                    avps.append(a)
                elif node.tag == "command":
                    req, ans = node.find("request"), node.find("answer")
                    if req is None or ans is None:
                        fail(f"{fn}: command {node.get('name')} lacks <request> or <answer>")
                        continue
                    commands.append({
                        "file": fn, "app": app_id, "code": int(node.get("code")),
                        "name": node.get("name"), "short": node.get("short"),
                        "request": [Rule(r) for r in req.findall("rule")],
                        "answer": [Rule(r) for r in ans.findall("rule")],
                    })
                elif node.tag != "vendor":
                    fail(f"{fn}: unexpected <{node.tag}> in <application>")
    return avps, commands, apps


def check_shape(avps, commands, by_name):
    for a in avps:
        where = f"{a.file}: AVP {a.name}({a.code})"
        if a.type not in TYPES:
            fail(f"{where}: unknown data type {a.type!r}")
        for k, fl in a.flags.items():
            if not fl <= {"V", "M", "P"}:
                fail(f"{where}: {k}={sorted(fl)} has letters other than V, M, P")
        placed = [k for k in a.flags if "M" in a.flags[k]]
        if len(placed) != 1:
            fail(f"{where}: M must be in exactly one of must/may/must-not, found in {placed}")
        v_in = [k for k in a.flags if "V" in a.flags[k]]
        want_v = "must" if a.vendor else "must-not"
        if v_in != [want_v]:
            fail(f"{where}: V belongs in {want_v} (vendor {a.vendor}), found in {v_in}")
        if a.type == "Grouped":
            if a.items:
                fail(f"{where}: Grouped AVP with <item>s")
            if not a.rules:
                fail(f"{where}: Grouped AVP without any <rule>")
            check_rules(where, a.rules, by_name)
        else:
            if a.rules:
                fail(f"{where}: {a.type} AVP with <rule>s")
            if a.items and a.type != "Enumerated":
                fail(f"{where}: {a.type} AVP with enumerated <item>s")
        codes = [c for c, _ in a.items]
        if len(codes) != len(set(codes)):
            fail(f"{where}: duplicate enumerated value")
        names = [n for _, n in a.items]
        if len(names) != len(set(names)):
            fail(f"{where}: duplicate enumerated name")
    for c in commands:
        for part in ("request", "answer"):
            check_rules(f"{c['file']}: command {c['name']} {part}", c[part], by_name)


def check_rules(where, rules, by_name):
    seen = set()
    fixed_done = False
    for i, r in enumerate(rules):
        if r.avp is None:
            fail(f"{where}: <rule> without avp")
            continue
        if r.required not in ("true", "false"):
            fail(f"{where}: rule {r.avp} has required={r.required!r}")
        if r.avp == "AVP":
            if r.required != "false" or r.max is not None or r.fixed:
                fail(f"{where}: the wildcard rule must be <rule avp=\"AVP\" required=\"false\"/>")
            if i != len(rules) - 1:
                fail(f"{where}: *[AVP] is not the last rule")
            continue
        if r.avp not in by_name:
            fail(f"{where}: rule names undefined AVP {r.avp}")
        if r.avp in seen:
            fail(f"{where}: {r.avp} listed twice")
        seen.add(r.avp)
        if r.max is not None and r.max < r.min:
            fail(f"{where}: rule {r.avp} has max < min")
        if r.fixed:
            # The codec checks a fixed AVP sits at the position of its rule: fixed rules lead.
            if fixed_done:
                fail(f"{where}: fixed rule {r.avp} after a non-fixed rule")
            if r.max != 1 or r.min != 1:
                fail(f"{where}: fixed rule {r.avp} must be required with max 1")
        else:
            fixed_done = True


def check_uniqueness(avps):
    by_key, by_name = {}, {}
    for a in avps:
        k = (a.code, a.vendor)
        if k in by_key:
            o = by_key[k]
            fail(f"duplicate (code {a.code}, vendor {a.vendor}): {o.name} in {o.file} and {a.name} in {a.file}")
        by_key[k] = a
        if a.name in by_name:
            o = by_name[a.name]
            fail(f"duplicate name {a.name}: {o.file} ({o.code}/{o.vendor}) and {a.file} ({a.code}/{a.vendor})")
        by_name[a.name] = a
    return by_key, by_name


def check_tsv(shared, by_key):
    path = os.path.join(shared, "spec", "avp-table.tsv")
    n = 0
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if not row.get("name"):
                continue
            n += 1
            code, vendor = int(row["code"]), int(row["vendor_id"])
            a = by_key.get((code, vendor))
            label = f"TSV {row['name']} ({code}/{vendor})"
            if a is None:
                fail(f"{label}: not defined")
                continue
            if a.name != row["name"]:
                fail(f"{label}: defined as {a.name}")
            if a.type != row["type"]:
                fail(f"{label}: type {a.type}, TSV says {row['type']}")
            if a.m_rule != row["mandatory_bit"]:
                fail(f"{label}: M-bit rule {a.m_rule}, TSV says {row['mandatory_bit']}")
            want = "oma-im.xml" if (vendor == 10415 and code in OMA_CODES) else APP_FILE.get(row["application"])
            if a.file != want:
                fail(f"{label}: defined in {a.file}, expected {want}")
    return n


AVP_LINE = re.compile(r"AVP: (.+?)\((\d+)\) l=")


def check_fixture_names(shared, by_name):
    seen = {}
    for p in sorted(glob.glob(os.path.join(shared, "fixtures", "*.tshark.txt"))):
        for line in open(p):
            m = AVP_LINE.search(line)
            if not m:
                continue
            name, code = m.group(1), int(m.group(2))
            if name == "Unknown" and code == 99999:
                continue
            seen[(name, code)] = os.path.basename(p)
    for (name, code), src in sorted(seen.items()):
        a = by_name.get(name)
        if a is None:
            fail(f"fixture {src}: AVP {name}({code}) is not defined")
        elif a.code != code or a.vendor != 0:
            fail(f"fixture {src}: AVP {name}({code}) is defined as code {a.code} vendor {a.vendor}")
    return len(seen)


# --- a small decoder + validator mirroring crates/tollgate-codec/src/dictionary.rs -------------

class Invalid(Exception):
    def __init__(self, code, why):
        super().__init__(f"{code} {why}")
        self.code = code


def decode_avps(b):
    out, i = [], 0
    while i < len(b):
        if len(b) - i < 8:
            raise ValueError("truncated AVP header")
        code = int.from_bytes(b[i:i + 4], "big")
        flags = b[i + 4]
        length = int.from_bytes(b[i + 5:i + 8], "big")
        hdr = 12 if flags & 0x80 else 8
        vendor = int.from_bytes(b[i + 8:i + 12], "big") if flags & 0x80 else 0
        if length < hdr or i + length > len(b):
            raise ValueError("bad AVP length")
        out.append((code, vendor, flags, b[i + hdr:i + length]))
        i += (length + 3) & ~3
    return out


def validate_group(rules, avps, by_key, by_name):
    any_other = bool(rules) and rules[-1].avp == "AVP"
    named = [r for r in rules if r.avp != "AVP"]
    index = {}
    for ri, r in enumerate(named):
        d = by_name[r.avp]
        index[(d.code, d.vendor)] = ri
    counts = [0] * len(named)
    for pos, (code, vendor, flags, data) in enumerate(avps):
        d = by_key.get((code, vendor))
        if d is None:
            if flags & 0x40:
                raise Invalid(5001, f"unknown AVP {code}/{vendor} with M")
            continue
        if flags & 0x40 and d.m_rule == "mustnot":
            raise Invalid(5016, f"{d.name}: M set")
        n = FIXED_LEN.get(d.type)
        if n is not None and len(data) != n:
            raise Invalid(5014, f"{d.name}: length")
        if d.type == "Enumerated" and d.items:
            v = int.from_bytes(data, "big", signed=True)
            if v not in {c for c, _ in d.items}:
                raise Invalid(5004, f"{d.name}: unknown value {v}")
        if d.type == "Grouped":
            validate_group(d.rules, decode_avps(data), by_key, by_name)
        ri = index.get((code, vendor))
        if ri is None:
            if not any_other:
                raise Invalid(5008, f"{d.name} not allowed")
            continue
        counts[ri] += 1
        if named[ri].fixed and pos != ri:
            raise Invalid(5008, f"{d.name} not in its fixed position")
        if named[ri].max is not None and counts[ri] > named[ri].max:
            raise Invalid(5009, f"{d.name} too many times")
    for ri, r in enumerate(named):
        if counts[ri] < r.min:
            raise Invalid(5005, f"missing {r.avp}")


def validate_message(raw, commands, apps, by_key, by_name):
    flags = raw[4]
    code = int.from_bytes(raw[5:8], "big")
    app = int.from_bytes(raw[8:12], "big")
    cmd = next((c for c in commands if c["code"] == code and c["app"] == app), None)
    if cmd is None:
        known = any(app in s for s in apps.values())
        raise Invalid(3001 if known else 3007, f"no command {code} in application {app}")
    avps = decode_avps(raw[20:])
    if flags & 0x80:
        validate_group(cmd["request"], avps, by_key, by_name)
    elif not flags & 0x20:
        validate_group(cmd["answer"], avps, by_key, by_name)
    else:
        validate_group([], avps, by_key, by_name)


def result_code(raw):
    for code, vendor, _, data in decode_avps(raw[20:]):
        if code == 268 and vendor == 0:
            return int.from_bytes(data, "big")
    return None


def check_fixture_messages(shared, commands, apps, by_key, by_name):
    fx = os.path.join(shared, "fixtures")
    load_hex = lambda n: bytes.fromhex(open(os.path.join(fx, n + ".hex")).read().strip())
    good = ["pyd-00-CER", "pyd-01-CEA", "pyd-02-DWR", "pyd-03-DWA", "pyd-04-CCR-I", "pyd-05-CCA-I",
            "pyd-06-CCR-U", "pyd-08-CCR-T", "pyd-10-CCR-I", "pyd-12-CCR-T", "pyd-14-CCR-E",
            "pyd-16-CCR-E", "pyd-44-DPR", "pyd-45-DPA", "fdl-00-CER", "fdl-04-CCR-I", "fdl-28-CCA-I"]
    bad = [("pyd-28-CCR-I", "pyd-29-CCA"), ("pyd-30-CCR", "pyd-31-CCA"),
           ("pyd-32-CCR-I", "pyd-33-CCA"), ("pyd-34-CCR-E", "pyd-35-CCA")]
    n = 0
    for g in good:
        if not os.path.exists(os.path.join(fx, g + ".hex")):
            continue
        n += 1
        try:
            validate_message(load_hex(g), commands, apps, by_key, by_name)
        except Invalid as e:
            fail(f"fixture {g} should validate but gives {e}")
    for req, ans in bad:
        if not os.path.exists(os.path.join(fx, req + ".hex")):
            continue
        n += 1
        want = result_code(load_hex(ans))
        try:
            validate_message(load_hex(req), commands, apps, by_key, by_name)
            fail(f"fixture {req} validates, but its answer {ans} says {want}")
        except Invalid as e:
            if e.code != want:
                fail(f"fixture {req}: we would answer {e}, {ans} says {want}")
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", help="the shared/ directory (spec/ and fixtures/)")
    ap.add_argument("--dictionaries", default=os.path.join(REPO, "dictionaries"))
    args = ap.parse_args()
    shared = args.shared
    if shared is None:
        for cand in (os.path.join(REPO, "..", "shared"), "/work/shared"):
            if os.path.isdir(os.path.join(cand, "spec")):
                shared = cand
                break
    if shared is None:
        print("check-dictionaries: shared/ not found (use --shared DIR)", file=sys.stderr)
        return 1

    avps, commands, apps = load(args.dictionaries)
    by_key, by_name = check_uniqueness(avps)
    check_shape(avps, commands, by_name)
    rows = check_tsv(shared, by_key)
    fixture_avps = check_fixture_names(shared, by_name)
    messages = check_fixture_messages(shared, commands, apps, by_key, by_name) if not errors else 0

    for fn in FILES:
        mine = [a for a in avps if a.file == fn]
        cmds = [c for c in commands if c["file"] == fn]
        grouped = sum(1 for a in mine if a.type == "Grouped")
        enums = sum(1 for a in mine if a.type == "Enumerated")
        cmd_s = ", ".join(f"{c['short']}R/{c['short']}A {c['code']}" for c in cmds) or "none"
        print(f"{fn:20} application {','.join(map(str, sorted(apps.get(fn, []))))}: "
              f"{len(mine):3} AVPs ({grouped} grouped, {enums} enumerated); commands: {cmd_s}")
    print(f"total: {len(avps)} AVPs, {len(commands)} commands; {rows} TSV rows checked; "
          f"{fixture_avps} distinct fixture AVPs checked; {messages} fixture messages validated")
    if errors:
        print(f"\n{len(errors)} problem(s):", file=sys.stderr)
        for e in errors:
            print("  " + e, file=sys.stderr)
        return 1
    print("check-dictionaries: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

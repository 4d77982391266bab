#!/usr/bin/env python3
"""Generate `schema.rs`: the wire schema of Kubernetes' protobuf messages
together with the JSON rules of the Go types they mirror.

Why both inputs: the .proto files give tags, wire types and resolved
message types, but not how Go's encoding/json writes a field (its JSON
name when inlined, `omitempty`, pointer or value). Those come from the Go
struct tags in the same packages. Both are read at the Kubernetes version
k8s-pb was generated from (1.35 for k8s-pb 0.9), so tags agree with the
k8s-pb types the tests encode with.

Usage (API = a checkout of the kubernetes/api repository at v0.35.x,
MACHINERY = the kubernetes/apimachinery repository at the same tag):

    python3 gen_schema.py API MACHINERY > schema.rs && rustfmt schema.rs
"""

import os
import re
import sys

FIELD_RE = re.compile(
    r"^\s*(optional|repeated|required)\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;"
    r"|^\s*map<\s*string\s*,\s*([\w.]+)\s*>\s+(\w+)\s*=\s*(\d+)\s*;"
)
SCALARS = {"bool": "Bool", "int32": "Int32", "int64": "Int64",
           "string": "String", "bytes": "Bytes"}

# Messages whose JSON form is not an object of their fields.
SPECIAL = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time": "Time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime": "MicroTime",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration": "Duration",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1": "RawJson",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "RawJson",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
}


def proto_files(api, machinery):
    for root, _, files in os.walk(api):
        for f in files:
            if f == "generated.proto":
                yield root, False
    for sub in ["pkg/apis/meta/v1", "pkg/runtime", "pkg/api/resource",
                "pkg/util/intstr"]:
        yield os.path.join(machinery, sub), True


def parse_proto(path):
    package, messages, cur = None, {}, None
    for line in open(path):
        line = line.split("//")[0].rstrip()
        m = re.match(r"^package\s+([\w.]+);", line)
        if m:
            package = m.group(1)
            continue
        m = re.match(r"^message\s+(\w+)\s*{", line)
        if m:
            cur = []
            messages[m.group(1)] = cur
            continue
        if line.startswith("}"):
            cur = None
            continue
        m = FIELD_RE.match(line)
        if m and cur is not None:
            if m.group(1):
                card = "Repeated" if m.group(1) == "repeated" else "One"
                cur.append((m.group(3), int(m.group(4)), m.group(2), card))
            else:
                cur.append((m.group(6), int(m.group(7)), m.group(5), "Map"))
    return package, messages


def parse_go(directory):
    """Struct fields by (struct, proto tag) and the named slice types."""
    fields, lists, group = {}, set(), None
    for f in sorted(os.listdir(directory)):
        if not f.endswith(".go") or f.endswith("_test.go") or f.startswith("zz_") \
                or f.startswith("generated"):
            continue
        struct = None
        for line in open(os.path.join(directory, f)):
            m = re.match(r"^// \+groupName=(\S*)", line)
            if m:
                group = m.group(1)
            m = re.match(r"^type (\w+) \[\]\w+\s*$", line)
            if m:
                lists.add(m.group(1))
            m = re.match(r"^type (\w+) struct {", line)
            if m:
                struct = m.group(1)
                continue
            if line.startswith("}"):
                struct = None
                continue
            if struct is None or "protobuf:\"" not in line:
                continue
            m = re.match(r"^\s*([^`]*?)\s*`([^`]*)`", line)
            if not m:
                continue
            decl, tag = m.group(1).split(), m.group(2)
            gotype = decl[-1]
            pm = re.search(r'protobuf:"\w+,(\d+),', tag)
            jm = re.search(r'json:"([^"]*)"', tag)
            if not pm or not jm:
                continue
            parts = jm.group(1).split(",")
            fields[(struct, int(pm.group(1)))] = {
                "json": parts[0],
                "omitempty": "omitempty" in parts[1:],
                "omitzero": "omitzero" in parts[1:],
                "inline": "inline" in parts[1:],
                "pointer": gotype.startswith("*"),
            }
    return fields, lists, group


def emit_rule(go, card, ty, special):
    """How Go's encoding/json writes this field (see Emit in protobuf.rs)."""
    if go is None:
        return "IfPresent"
    if go["json"] == "-":
        return "Skip"
    if go["inline"]:
        return "Inline"
    if go["pointer"]:
        return "IfPresent" if go["omitempty"] else "PresentOrNull"
    if card != "One" or ty == "Bytes":
        return "OmitEmpty" if go["omitempty"] else "Always"
    if ty in SCALARS.values():
        return "OmitEmpty" if go["omitempty"] else "Always"
    # A struct value: omitempty never omits it in Go, omitzero does.
    return "OmitZero" if go["omitzero"] else "Always"


def main():
    api, machinery = sys.argv[1], sys.argv[2]
    messages = {}  # full name -> (fields, go fields, lists)
    groups = []
    warnings = []
    for directory, is_machinery in proto_files(api, machinery):
        package, msgs = parse_proto(os.path.join(directory, "generated.proto"))
        go, lists, group = parse_go(directory)
        if not is_machinery:
            rel = os.path.relpath(directory, api).split(os.sep)
            if group is None:
                group = "" if rel[0] == "core" else rel[0]
            groups.append((group, rel[-1], package))
        for name, fields in msgs.items():
            full = package + "." + name
            resolved = []
            for fname, tag, ty, card in fields:
                if ty in SCALARS:
                    ty = SCALARS[ty]
                elif ty.startswith("."):
                    ty = ty[1:]
                elif "." not in ty:
                    ty = package + "." + ty
                g = go.get((name, tag))
                if g is None and full not in SPECIAL:
                    warnings.append(f"{full}.{fname}: no Go field, emitted when present")
                json = g["json"] if g and g["json"] not in ("", "-") else fname
                resolved.append((fname, tag, ty, card, json, g))
            kind = SPECIAL.get(full)
            if kind is None and name in lists:
                kind = "List"
            messages[full] = (resolved, kind or "Object")
    names = sorted(messages)
    index = {n: i for i, n in enumerate(names)}
    out = []
    out.append("// @generated by gen_schema.py from the Kubernetes v1.35 protos and Go types.")
    out.append("// Do not edit by hand; regenerate when k8s-pb moves to a new Kubernetes version.")
    out.append("")
    out.append("use super::{Card, Emit, Field, Message, Shape, Ty};")
    out.append("")
    out.append("/// Proto packages by API group and version.")
    out.append("pub(super) static GROUPS: &[(&str, &str, &str)] = &[")
    for g, v, p in sorted(groups):
        out.append(f'    ("{g}", "{v}", "{p}"),')
    out.append("];")
    out.append("")
    out.append("/// Every message, sorted by full proto name.")
    out.append("pub(super) static MESSAGES: &[Message] = &[")
    for n in names:
        fields, shape = messages[n]
        out.append(f'    Message {{ name: "{n}", shape: Shape::{shape}, fields: &[')
        for fname, tag, ty, card, json, g in sorted(fields, key=lambda f: f[1]):
            if ty in SCALARS.values():
                tyrs = f"Ty::{ty}"
            elif ty in index:
                tyrs = f"Ty::Msg({index[ty]})"
            else:
                raise SystemExit(f"unresolved type {ty} in {n}.{fname}")
            rule = emit_rule(g, card, ty, shape)
            out.append(f'        Field {{ tag: {tag}, json: "{json}", ty: {tyrs}, '
                       f'card: Card::{card}, emit: Emit::{rule} }},')
        out.append("    ] },")
    out.append("];")
    print("\n".join(out))
    for w in warnings:
        print("warning:", w, file=sys.stderr)


main()

"""Read the qbXML XSD into the small order/length table the builders use (`_rules.py`).

The schema files are Intuit's and stay outside the repository; this walker extracts only the facts
the builders need (child order, cardinality, choices, max lengths, enumerations, base types) for the
request and response kinds this package speaks. `python -m erpsync.qbwc_bridge.qbxml._xsd_model DIR`
regenerates `_rules.py`; a unit test re-derives the table from the real XSD and compares, so the
fallback rules can never drift from the schema unnoticed.
"""

from __future__ import annotations

import pprint
import sys
from pathlib import Path
from typing import Any

XSD = "{http://www.w3.org/2001/XMLSchema}"

#: The message kinds (without Rq/Rs) the library builds and the simulator answers.
KINDS: tuple[str, ...] = (
    "HostQuery",
    "CompanyQuery",
    "PreferencesQuery",
    "AccountAdd",
    "AccountQuery",
    "CustomerAdd",
    "CustomerMod",
    "CustomerQuery",
    "SalesRepQuery",
    "ItemServiceAdd",
    "ItemServiceMod",
    "ItemServiceQuery",
    "ItemNonInventoryAdd",
    "ItemNonInventoryMod",
    "ItemNonInventoryQuery",
    "ItemInventoryAdd",
    "ItemInventoryMod",
    "ItemInventoryQuery",
    "ItemQuery",
    "SalesOrderAdd",
    "SalesOrderMod",
    "SalesOrderQuery",
    "InvoiceAdd",
    "InvoiceMod",
    "InvoiceQuery",
    "SalesReceiptAdd",
    "SalesReceiptMod",
    "SalesReceiptQuery",
    "ListDel",
    "TxnDel",
    "ListDeletedQuery",
    "TxnDeletedQuery",
    "DataExtDefAdd",
    "DataExtDefQuery",
    "DataExtAdd",
    "DataExtMod",
    "DataExtDel",
)


class _Schema:
    """The three XSD files of the include chain, indexed by global name."""

    def __init__(self, schema_dir: Path):
        from lxml import etree

        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        self.elements: dict[str, Any] = {}
        self.types: dict[str, Any] = {}
        self.groups: dict[str, Any] = {}
        self.simple: dict[str, Any] = {}
        for name in ("qbxmltypes130.xsd", "qbxml130_modified.xsd", "qbxmlops130.xsd", "qbxmlso130.xsd"):
            root = etree.parse(str(schema_dir / name), parser).getroot()
            for node in root:
                tag, key = node.tag, node.get("name")
                if tag == f"{XSD}element":
                    self.elements[key] = node
                elif tag == f"{XSD}complexType":
                    self.types[key] = node
                elif tag == f"{XSD}group":
                    self.groups[key] = node
                elif tag == f"{XSD}simpleType":
                    self.simple[key] = node


def _simple_facts(schema: _Schema, node) -> dict[str, Any]:
    """Base type, max length and enumeration of a simple type (inline restriction or named type)."""
    facts: dict[str, Any] = {}
    restriction = node.find(f"{XSD}restriction")
    if restriction is None:
        return facts
    base = restriction.get("base", "")
    lengths = restriction.findall(f"{XSD}maxLength")
    if lengths:
        facts["maxlen"] = int(lengths[0].get("value"))
    enums = [e.get("value") for e in restriction.findall(f"{XSD}enumeration")]
    if enums:
        facts["enum"] = tuple(enums)
    if base in schema.simple:
        inherited = _simple_facts(schema, schema.simple[base])
        facts["base"] = base
        for key in ("maxlen", "enum"):
            if key not in facts and key in inherited:
                facts[key] = inherited[key]
    else:
        facts["base"] = base.replace("xsd:", "")
    return facts


class _Walker:
    def __init__(self, schema: _Schema):
        self.schema = schema
        self.aggregates: dict[str, tuple] = {}
        self.choices: dict[str, dict[str, Any]] = {}
        self._choice_seq = 0

    # Each aggregate maps to a tuple of child specs, in schema order:
    # (name, key_or_None, min, max, facts, path) where path = ((choice_id, branch), ...).
    def aggregate(self, key: str, complex_node) -> str:
        if key in self.aggregates:
            return key
        self.aggregates[key] = ()  # placeholder against recursion
        children: list[tuple] = []
        content = complex_node
        simple_content = complex_node.find(f"{XSD}simpleContent")
        if simple_content is not None:
            raise ValueError(f"{key} has simple content")
        for part in content:
            if part.tag in (f"{XSD}sequence", f"{XSD}choice", f"{XSD}group"):
                self._particle(key, part, children, (), 1, 1)
        self.aggregates[key] = tuple(children)
        return key

    def _particle(self, key, node, out, path, outer_min, outer_max):
        tag = node.tag
        occurs_min = int(node.get("minOccurs", "1")) * outer_min
        raw_max = node.get("maxOccurs", "1")
        occurs_max = None if raw_max == "unbounded" or outer_max is None else int(raw_max) * outer_max
        if tag == f"{XSD}sequence":
            for child in node:
                self._particle(key, child, out, path, occurs_min, occurs_max)
        elif tag == f"{XSD}group":
            group = self.schema.groups[node.get("ref")]
            for child in group:
                self._particle(key, child, out, path, occurs_min, occurs_max)
        elif tag == f"{XSD}choice":
            self._choice_seq += 1
            cid = f"{key}#{self._choice_seq}"
            branches = [
                c for c in node if c.tag in (f"{XSD}sequence", f"{XSD}choice", f"{XSD}group", f"{XSD}element")
            ]
            parent = path[-1] if path else None
            self.choices[cid] = {
                "min": occurs_min,
                "max": occurs_max,
                "parent": parent,
                "branches": len(branches),
            }
            for index, branch in enumerate(branches):
                self._particle(key, branch, out, (*path, (cid, index)), 1, occurs_max)
        elif tag == f"{XSD}element":
            out.append(self._element(key, node, path, occurs_min, outer_max))

    def _element(self, parent_key, node, path, occurs_min, outer_max):
        max_raw = node.get("maxOccurs", "1")
        occurs_max = None if max_raw == "unbounded" or outer_max is None else int(max_raw) * outer_max
        ref = node.get("ref")
        if ref:
            name, decl = ref, self.schema.elements[ref]
        else:
            name, decl = node.get("name"), node
        child_key, facts = None, {}
        type_name = decl.get("type")
        inline_complex = decl.find(f"{XSD}complexType")
        inline_simple = decl.find(f"{XSD}simpleType")
        if type_name and type_name in self.schema.types:
            child_key = self._complex_or_simple(type_name, self.schema.types[type_name], facts)
        elif type_name:
            facts.update(
                _simple_facts(self.schema, self.schema.simple[type_name])
                if type_name in self.schema.simple
                else {"base": type_name.replace("xsd:", "")}
            )
            if type_name in self.schema.simple:
                facts["base"] = type_name
        elif inline_complex is not None:
            key = name if ref else f"{parent_key}/{name}"
            child_key = self._complex_or_simple(key, inline_complex, facts)
        elif inline_simple is not None:
            facts.update(_simple_facts(self.schema, inline_simple))
        return (name, child_key, occurs_min, occurs_max, facts, path)

    def _complex_or_simple(self, key, complex_node, facts):
        simple_content = complex_node.find(f"{XSD}simpleContent")
        if simple_content is not None:
            ext = simple_content.find(f"{XSD}extension")
            base = ext.get("base")
            if base in self.schema.simple:
                facts.update(_simple_facts(self.schema, self.schema.simple[base]))
                facts["base"] = base
            else:
                facts["base"] = base.replace("xsd:", "")
            return None
        return self.aggregate(key, complex_node)


def _attributes(schema: _Schema, type_node) -> dict[str, dict[str, Any]]:
    attrs = {}
    for attr in type_node.findall(f"{XSD}attribute"):
        facts: dict[str, Any] = {"required": attr.get("use") == "required"}
        inline = attr.find(f"{XSD}simpleType")
        if inline is not None:
            facts.update(_simple_facts(schema, inline))
        elif attr.get("type"):
            facts["base"] = attr.get("type")
        attrs[attr.get("name")] = facts
    return attrs


def build_model(schema_dir: Path | str, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """Return {"messages": {...}, "aggregates": {...}, "choices": {...}, "simple_types": {...}}."""
    schema = _Schema(Path(schema_dir))
    walker = _Walker(schema)
    messages: dict[str, Any] = {}
    for kind in kinds:
        for suffix in ("Rq", "Rs"):
            type_name = f"{kind}{suffix}Type"
            if type_name not in schema.types:
                raise KeyError(f"{type_name} is not declared in the schema")
            walker.aggregate(f"{kind}{suffix}", schema.types[type_name])
            messages[f"{kind}{suffix}"] = _attributes(schema, schema.types[type_name])
    messages_rq = schema.elements["QBXMLMsgsRq"].find(f"{XSD}complexType")
    messages["QBXMLMsgsRq"] = _attributes(schema, messages_rq)
    messages["QBXMLMsgsRs"] = _attributes(schema, schema.elements["QBXMLMsgsRs"].find(f"{XSD}complexType"))
    simple_types = {}
    for name, node in schema.simple.items():
        facts = _simple_facts(schema, node)
        simple_types[name] = {k: v for k, v in facts.items() if k != "base"}
    return {
        "messages": messages,
        "aggregates": walker.aggregates,
        "choices": walker.choices,
        "simple_types": {k: v for k, v in simple_types.items() if v},
    }


def render(model: dict[str, Any]) -> str:
    """Render the model as the source of `_rules.py`."""
    header = (
        '"""Order, cardinality, choices and length rules of the qbXML 13.0 messages this package uses.\n\n'
        "GENERATED from Intuit's qbxmlops130.xsd by `python -m erpsync.qbwc_bridge.qbxml._xsd_model DIR`;\n"
        "do not edit by hand. Only facts are kept (names, order, limits), not the schema itself, so the\n"
        "builders work without the schema directory; tests/unit/test_qbxml_rules.py proves it still\n"
        'matches the XSD.\n"""\n\n'
        "# fmt: off\n"
    )
    body = []
    for name in ("messages", "aggregates", "choices", "simple_types"):
        body.append(f"{name.upper()} = {pprint.pformat(model[name], width=110, sort_dicts=True)}\n")
    return header + "\n".join(body) + "# fmt: on\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m erpsync.qbwc_bridge.qbxml._xsd_model SCHEMA_DIR", file=sys.stderr)
        return 2
    target = Path(__file__).with_name("_rules.py")
    target.write_text(render(build_model(args[0])))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

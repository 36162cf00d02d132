//! Wireshark's Diameter dictionary, read at run time to fill in the AVPs, commands and
//! applications our own XML dictionaries do not define.
//!
//! Debian's `wireshark-common` installs it as `/usr/share/wireshark/diameter/dictionary.xml`
//! plus the files that file includes. Nothing of it is embedded here: operators name the file
//! (`diameter.wireshark_dictionary`, `tollgate decode --wireshark-dictionary`).
//!
//! # Format
//!
//! ```xml
//! <!DOCTYPE dictionary SYSTEM "dictionary.dtd" [
//!   <!ENTITY TGPP SYSTEM "TGPP.xml">
//! ]>
//! <dictionary>
//!   <base uri="…">
//!     <command name="Capabilities-Exchange" code="257" vendor-id="None"/>
//!     <typedefn type-name="DiameterURI" type-parent="UTF8String"/>
//!     <avp name="Origin-Host" code="264" mandatory="must"><type type-name="DiameterIdentity"/></avp>
//!   </base>
//!   <application id="4" name="…"><command …/><avp …/></application>
//!   <vendor vendor-id="TGPP" code="10415" name="3GPP"/>
//!   &TGPP;
//! </dictionary>
//! ```
//!
//! An `<avp>` has `<type type-name>` or `<grouped><gavp name/>…</grouped>`, then `<enum name
//! code/>` values; `vendor-id` names a `<vendor>` by its `vendor-id` (ASCII case ignored, `None`
//! is vendor 0, the first declaration of a name counts). Commands in `<base>` belong to
//! application 0, others to their `<application>`. Elements this reader does not know are
//! skipped, as Wireshark's own reader skips them.
//!
//! # External entities
//!
//! `roxmltree` does not load external entities, so this module resolves them: every
//! `<!ENTITY name SYSTEM "file">` (or `PUBLIC "id" "file"`) of the top file's internal DTD
//! subset, referenced as `&name;` in the top file's element content, is read and parsed as the
//! content of the element where the reference stands, after its optional `<?xml …?>` text
//! declaration. Errors therefore name the included file and its own line. The expansion is
//! bounded and not recursive: references inside included files are not expanded (they are
//! reported as unknown entities), the top file may make at most [`MAX_ENTITY_REFERENCES`]
//! references, and all files read together may hold at most [`MAX_DICTIONARY_OCTETS`].
//!
//! A system identifier must be a relative path below the top file's directory: no `..`, no
//! absolute path, no URL. The dictionary is data the operator points at; it must not make
//! Tollgate read files (or fetch URLs) the operator did not name. Wireshark's own files all
//! name plain files beside `dictionary.xml`. Symbolic links inside the directory are followed:
//! the directory is the operator's.
//!
//! # Types
//!
//! Wireshark's type names (ASCII case ignored) map onto [`AvpType`]: `OctetString`,
//! `OctetStringOrUTF8` (bytes Wireshark shows as text when printable) → OctetString;
//! `IPAddress` and `Address` → Address (RFC 6733 §4.3.1, with its family); `AppId` and
//! `VendorId` → Unsigned32; `Enumerated` → Enumerated; the other RFC 6733 §4.2–4.3 names to
//! themselves. Any other name follows its `<typedefn type-parent>` chain to one of these, and
//! falls back to OctetString, as Wireshark does. `<enum>` values are kept for Enumerated AVPs
//! only (Wireshark also names values of Unsigned32 AVPs such as Result-Code; those stay
//! numbers). `mandatory="must"` / `"mustnot"` give the M-bit rule, anything else "may";
//! `vendor-bit`, `protected` and `may-encrypt` are not used (the vendor comes from
//! `vendor-id`). Wireshark gives no cardinalities and no command grammars: a grouped AVP gets
//! the grammar `*[member] … *[AVP]` and a command `*[AVP]` for request and answer.
//!
//! # Merging with our dictionaries
//!
//! Ours (the embedded files and `diameter.dictionaries`) stay authoritative: they carry the
//! command grammars and M-bit rules Tollgate enforces. Wireshark's definitions only fill in:
//! - an AVP whose code and vendor one of ours defines is not taken from Wireshark at all (name,
//!   type, M rule, values and grammar stay ours), even where Wireshark spells the name
//!   differently (`3GPP-SIP-Method` for our `SIP-Method`, 824/10415);
//! - a Wireshark AVP whose name is already taken by a different AVP (one of ours, such as
//!   `SIP-Method` 393/0 of RFC 4740 against our 824/10415, or an earlier Wireshark one) is loaded
//!   as `wireshark:NAME`, or `wireshark:NAME:VENDOR:CODE` when that is taken too;
//! - within Wireshark's files a later definition of the same code and vendor replaces the
//!   earlier one, as in Wireshark; names are trimmed (Wireshark's files have stray blanks in
//!   a few names) and `<gavp>` references are matched ignoring ASCII case; a reference to an
//!   AVP no file defines is dropped (the grammar admits any AVP anyway);
//! - a command is added unless ours define its code in its application, so `decode` can name
//!   it; Wireshark's applications are not added, so a request for an application only
//!   Wireshark describes still fails validation with 3007 DIAMETER_APPLICATION_UNSUPPORTED
//!   (RFC 6733 §7.1.3): describing an application is not serving it.
//!
//! What Wireshark adds describes rather than judges (`AvpDef::describes_only`): its value
//! lengths and text encodings are checked like ours (they follow from the type), but its
//! enumerated value lists and its "mustnot" M rules are not enforced, so loading Wireshark's
//! dictionary never makes Tollgate refuse a message it accepted without it.

use crate::dictionary::{AvpDef, AvpType, Dictionary, DictionaryError, FillIn, FlagRule};
use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

/// Most `&name;` references to external entities the top file may make.
pub const MAX_ENTITY_REFERENCES: usize = 1024;
/// Most octets the top file and every included file may hold together (Wireshark 4.0's set is
/// about 1 MB).
pub const MAX_DICTIONARY_OCTETS: u64 = 64 << 20;
/// Deepest nesting of `<base>`, `<application>` and `<vendor>` elements (Wireshark's files
/// nest one level).
const MAX_NESTING: usize = 8;

/// Stands in the top file where an external entity is referenced.
const ENTITY_ELEMENT: &str = "tollgate-wireshark-entity";
/// Wraps an included file so that a fragment with several top-level elements parses.
const ENTITY_ROOT: &str = "tollgate-wireshark-entity-root";
/// Prefix of a Wireshark AVP whose name one of ours (or an earlier Wireshark one) already has.
pub const RENAME_PREFIX: &str = "wireshark:";

/// A Wireshark dictionary, read and checked: the definitions it gives, ready to fill in a
/// [`Dictionary`] ([`Dictionary::with_wireshark`], [`Dictionary::from_wireshark`]).
#[derive(Clone, Debug)]
pub struct WiresharkDictionary {
    path: PathBuf,
    /// One per code and vendor, in document order (a later definition replaced an earlier one).
    avps: Vec<WsAvp>,
    /// Every AVP name as written (trimmed, ASCII lower case) → (code, vendor).
    names: HashMap<String, (u32, u32)>,
    commands: Vec<WsCommand>,
    /// Application id and name, as `<application>` gives them (named in a dictionary made of
    /// Wireshark's files alone; never added to ours, see the module doc).
    applications: Vec<(u32, String)>,
}

#[derive(Clone, Debug)]
struct WsAvp {
    name: String,
    code: u32,
    vendor: u32,
    avp_type: AvpType,
    m_rule: FlagRule,
    items: Vec<(i32, String)>,
    /// `<gavp>` names as written.
    members: Vec<String>,
    file: String,
    line: u32,
}

#[derive(Clone, Debug)]
struct WsCommand {
    name: String,
    code: u32,
    application: u32,
    file: String,
    line: u32,
}

impl WiresharkDictionary {
    /// Reads `path` (Wireshark's `dictionary.xml` or a file of the same shape) and the files it
    /// includes. Errors name the file and line to fix.
    pub fn read(path: &Path) -> Result<WiresharkDictionary, DictionaryError> {
        let top = path.display().to_string();
        let mut reader = Reader {
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            top: top.clone(),
            entities: HashMap::new(),
            octets: 0,
            raw: Raw::default(),
        };
        let text = reader
            .read_text(path)
            .map_err(|message| DictionaryError::Io {
                file: top.clone(),
                message,
            })?;
        let lines = Lines::new(&text);
        let (body, entities) = expand_references(&text, &lines).map_err(|(line, message)| {
            DictionaryError::Definition {
                file: top.clone(),
                line,
                message,
            }
        })?;
        reader.entities = entities;
        let doc = parse_xml(&body, &top)?;
        let root = doc.root_element();
        let body_lines = Lines::new(&body);
        if root.tag_name().name() != "dictionary" {
            return Err(DictionaryError::Definition {
                file: top,
                line: body_lines.at(root.range().start),
                message: format!(
                    "root element is <{}>; Wireshark's format has <dictionary>",
                    root.tag_name().name()
                ),
            });
        }
        reader.walk(root, &body_lines, &top, 0, 0, true)?;
        reader.raw.resolve(path)
    }

    /// The top file this dictionary was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// AVP definitions read (one per code and vendor).
    pub fn avp_count(&self) -> usize {
        self.avps.len()
    }

    /// Command definitions read.
    pub fn command_count(&self) -> usize {
        self.commands.len()
    }

    /// Adds to `fill` what it does not define yet (the rules of the module documentation).
    fn fill(&self, fill: &mut FillIn<'_>) {
        // First every added AVP's final name, so that grouped members can name AVPs that are
        // added after their parent.
        let mut final_names: HashMap<(u32, u32), String> = HashMap::new();
        let mut assigned: HashSet<String> = HashSet::new();
        let mut added = Vec::new();
        for a in &self.avps {
            let k = (a.code, a.vendor);
            if let Some(ours) = fill.avp_name(a.code, a.vendor) {
                final_names.insert(k, ours.to_string());
                continue;
            }
            let candidates = [
                a.name.clone(),
                format!("{RENAME_PREFIX}{}", a.name),
                format!("{RENAME_PREFIX}{}:{}:{}", a.name, a.vendor, a.code),
            ];
            let Some(name) = candidates
                .into_iter()
                .find(|n| !fill.name_taken(n) && !assigned.contains(n))
            else {
                continue;
            };
            assigned.insert(name.clone());
            final_names.insert(k, name.clone());
            added.push((a, name));
        }
        for (a, name) in added {
            let mut members: Vec<String> = Vec::new();
            for m in &a.members {
                let resolved = match self.names.get(&fold(m)) {
                    Some(k) => final_names.get(k).cloned(),
                    // A member only our files define, under the name written.
                    None => fill.name_taken(m.trim()).then(|| m.trim().to_string()),
                };
                if let Some(r) = resolved {
                    if r != "AVP" && !members.contains(&r) {
                        members.push(r);
                    }
                }
            }
            let def = AvpDef {
                name,
                code: a.code,
                vendor: a.vendor,
                avp_type: a.avp_type,
                m_rule: a.m_rule,
                items: a.items.clone(),
                grammar: None,
                describes_only: true,
            };
            fill.add_avp(def, &members, &a.file, a.line);
        }
        for c in &self.commands {
            fill.add_command(c.code, c.application, &c.name, &c.file, c.line);
        }
    }
}

impl Dictionary {
    /// The embedded dictionaries, then `files` (as [`Dictionary::with_files`]), then what the
    /// Wireshark dictionary defines that those do not (see [`crate::wireshark`]).
    pub fn with_wireshark<P: AsRef<Path>>(
        files: &[P],
        wireshark: &WiresharkDictionary,
    ) -> Result<Dictionary, DictionaryError> {
        Dictionary::with_files_filled(files, |f| wireshark.fill(f))
    }

    /// Only what the Wireshark dictionary defines, without our files: every command then has
    /// an open grammar.
    pub fn from_wireshark(wireshark: &WiresharkDictionary) -> Result<Dictionary, DictionaryError> {
        Dictionary::from_sources_filled(&[], |f| {
            wireshark.fill(f);
            for (id, name) in &wireshark.applications {
                f.add_application(*id, name);
            }
        })
    }
}

/// Definitions as written, before vendor and type names are resolved (a `<vendor>` or
/// `<typedefn>` may come after its first use).
#[derive(Default)]
struct Raw {
    vendors: Vec<(String, u32)>,
    typedefns: Vec<(String, Option<String>)>,
    avps: Vec<RawAvp>,
    commands: Vec<RawCommand>,
    applications: Vec<(u32, String)>,
}

struct RawAvp {
    name: String,
    code: u32,
    vendor: Option<String>,
    m_rule: FlagRule,
    type_name: Option<String>,
    grouped: bool,
    members: Vec<String>,
    enums: Vec<(i32, String)>,
    file: String,
    line: u32,
}

struct RawCommand {
    name: String,
    code: u32,
    application: u32,
    vendor: Option<String>,
    file: String,
    line: u32,
}

impl Raw {
    fn resolve(self, path: &Path) -> Result<WiresharkDictionary, DictionaryError> {
        let mut vendors: HashMap<String, u32> = HashMap::from([("none".to_string(), 0)]);
        for (name, code) in self.vendors {
            vendors.entry(fold(&name)).or_insert(code);
        }
        let mut typedefns: HashMap<String, Option<String>> = HashMap::new();
        for (name, parent) in self.typedefns {
            typedefns.entry(fold(&name)).or_insert(parent);
        }
        let vendor_of = |v: &Option<String>, what: &str, file: &str, line: u32| match v {
            None => Ok(0),
            Some(v) => vendors
                .get(&fold(v))
                .copied()
                .ok_or_else(|| DictionaryError::Definition {
                    file: file.to_string(),
                    line,
                    message: format!(
                        "{what} names vendor {v:?}, which no <vendor vendor-id=…> declares"
                    ),
                }),
        };
        let mut avps: Vec<WsAvp> = Vec::with_capacity(self.avps.len());
        let mut by_key: HashMap<(u32, u32), usize> = HashMap::new();
        let mut names = HashMap::new();
        for a in self.avps {
            let vendor = vendor_of(&a.vendor, &format!("AVP {}", a.name), &a.file, a.line)?;
            let avp_type = if a.grouped {
                AvpType::Grouped
            } else {
                type_of(a.type_name.as_deref(), &typedefns)
            };
            let mut items = if avp_type == AvpType::Enumerated {
                a.enums
            } else {
                Vec::new()
            };
            // Sorted for AvpDef::item_name; of two names for one value the first written stays.
            items.sort_by_key(|(v, _)| *v);
            items.dedup_by_key(|(v, _)| *v);
            names.insert(fold(&a.name), (a.code, vendor));
            let def = WsAvp {
                name: a.name,
                code: a.code,
                vendor,
                avp_type,
                m_rule: a.m_rule,
                items,
                members: a.members,
                file: a.file,
                line: a.line,
            };
            match by_key.get(&(def.code, vendor)) {
                Some(&i) => avps[i] = def,
                None => {
                    by_key.insert((def.code, vendor), avps.len());
                    avps.push(def);
                }
            }
        }
        let mut commands = Vec::with_capacity(self.commands.len());
        for c in self.commands {
            vendor_of(&c.vendor, &format!("command {}", c.name), &c.file, c.line)?;
            commands.push(WsCommand {
                name: c.name,
                code: c.code,
                application: c.application,
                file: c.file,
                line: c.line,
            });
        }
        Ok(WiresharkDictionary {
            path: path.to_path_buf(),
            avps,
            names,
            commands,
            applications: self.applications,
        })
    }
}

/// Wireshark's names for the RFC 6733 §4.2–4.3 formats and its own aliases, ASCII lower case.
fn basic_type(folded: &str) -> Option<AvpType> {
    Some(match folded {
        "octetstring" | "octetstringorutf8" => AvpType::OctetString,
        "utf8string" => AvpType::UTF8String,
        "grouped" => AvpType::Grouped,
        "integer32" => AvpType::Integer32,
        "integer64" => AvpType::Integer64,
        "unsigned32" | "appid" | "vendorid" => AvpType::Unsigned32,
        "unsigned64" => AvpType::Unsigned64,
        "float32" => AvpType::Float32,
        "float64" => AvpType::Float64,
        "ipaddress" | "address" => AvpType::Address,
        "time" => AvpType::Time,
        "diameteridentity" => AvpType::DiameterIdentity,
        "diameteruri" => AvpType::DiameterURI,
        "ipfilterrule" => AvpType::IPFilterRule,
        "qosfilterrule" => AvpType::QoSFilterRule,
        "enumerated" => AvpType::Enumerated,
        _ => return None,
    })
}

/// A type name through the `<typedefn>` chain; OctetString when it ends nowhere (Wireshark's
/// fallback), also for a chain that loops.
fn type_of(name: Option<&str>, typedefns: &HashMap<String, Option<String>>) -> AvpType {
    let Some(name) = name else {
        return AvpType::OctetString;
    };
    let mut current = fold(name);
    for _ in 0..=typedefns.len() {
        if let Some(t) = basic_type(&current) {
            return t;
        }
        match typedefns.get(&current) {
            Some(Some(parent)) => current = fold(parent),
            _ => break,
        }
    }
    AvpType::OctetString
}

fn fold(name: &str) -> String {
    name.trim().to_ascii_lowercase()
}

/// A declared external entity: its system identifier and the line of its declaration.
struct Entity {
    system: String,
    line: u32,
}

struct Reader {
    dir: PathBuf,
    top: String,
    entities: HashMap<String, Entity>,
    octets: u64,
    raw: Raw,
}

impl Reader {
    /// Reads a whole file as UTF-8 within the octet budget.
    fn read_text(&mut self, path: &Path) -> Result<String, String> {
        let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
        if self.octets.saturating_add(len) > MAX_DICTIONARY_OCTETS {
            return Err(format!(
                "the dictionary files hold more than {MAX_DICTIONARY_OCTETS} octets together"
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        // The file may have grown since the metadata was read.
        self.octets = self.octets.saturating_add(text.len() as u64);
        if self.octets > MAX_DICTIONARY_OCTETS {
            return Err(format!(
                "the dictionary files hold more than {MAX_DICTIONARY_OCTETS} octets together"
            ));
        }
        Ok(text)
    }

    fn walk(
        &mut self,
        node: roxmltree::Node<'_, '_>,
        lines: &Lines,
        file: &str,
        application: u32,
        depth: usize,
        top: bool,
    ) -> Result<(), DictionaryError> {
        let at = |n: roxmltree::Node<'_, '_>, message: String| DictionaryError::Definition {
            file: file.to_string(),
            line: lines.at(n.range().start),
            message,
        };
        if depth > MAX_NESTING {
            return Err(at(
                node,
                format!("elements nested deeper than {MAX_NESTING} levels"),
            ));
        }
        for child in node.children().filter(roxmltree::Node::is_element) {
            let line = lines.at(child.range().start);
            match child.tag_name().name() {
                "base" => self.walk(child, lines, file, 0, depth + 1, top)?,
                "application" => {
                    let id: u32 = number(child, "id").map_err(|m| at(child, m))?;
                    let name = child.attribute("name").unwrap_or("").trim().to_string();
                    self.raw.applications.push((id, name));
                    self.walk(child, lines, file, id, depth + 1, top)?;
                }
                "vendor" => {
                    let name = required(child, "vendor-id").map_err(|m| at(child, m))?;
                    let code: u32 = number(child, "code").map_err(|m| at(child, m))?;
                    self.raw.vendors.push((name.to_string(), code));
                    // Wireshark's vendor files hold their AVPs inside <vendor>.
                    self.walk(child, lines, file, application, depth + 1, top)?;
                }
                "typedefn" => {
                    let name = required(child, "type-name").map_err(|m| at(child, m))?;
                    let parent = child.attribute("type-parent").map(str::to_string);
                    self.raw.typedefns.push((name.to_string(), parent));
                }
                "avp" => {
                    let avp = raw_avp(child, file, line).map_err(|m| at(child, m))?;
                    self.raw.avps.push(avp);
                }
                "command" => {
                    let name = required(child, "name").map_err(|m| at(child, m))?;
                    let code: u32 = number(child, "code").map_err(|m| at(child, m))?;
                    self.raw.commands.push(RawCommand {
                        name: name.to_string(),
                        code,
                        application,
                        vendor: vendor_attr(child),
                        file: file.to_string(),
                        line,
                    });
                }
                // Only references the top file makes are expanded: no recursion.
                ENTITY_ELEMENT if top => {
                    let name = child.attribute("name").unwrap_or("");
                    self.include(name, line, application, depth)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads the file of external entity `name`, referenced on `line` of the top file, as
    /// content of the element that holds the reference.
    fn include(
        &mut self,
        name: &str,
        line: u32,
        application: u32,
        depth: usize,
    ) -> Result<(), DictionaryError> {
        let top_error = |line: u32, message: String| DictionaryError::Definition {
            file: self.top.clone(),
            line,
            message,
        };
        let Some(entity) = self.entities.get(name) else {
            return Err(top_error(
                line,
                format!("<{ENTITY_ELEMENT}> names no declared external entity"),
            ));
        };
        let decl_line = entity.line;
        let path = entity_path(&self.dir, &entity.system)
            .map_err(|m| top_error(decl_line, format!("entity {name}: {m}")))?;
        let file = path.display().to_string();
        let text = self
            .read_text(&path)
            .map_err(|m| DictionaryError::Definition {
                file: self.top.clone(),
                line: decl_line,
                message: format!("entity {name}: cannot read {file}: {m}"),
            })?;
        let wrapped = format!(
            "<{ENTITY_ROOT}>{}</{ENTITY_ROOT}>",
            blank_text_declaration(&text)
        );
        let doc = parse_xml(&wrapped, &file)?;
        let lines = Lines::new(&wrapped);
        self.walk(doc.root_element(), &lines, &file, application, depth, false)
    }
}

fn raw_avp(node: roxmltree::Node<'_, '_>, file: &str, line: u32) -> Result<RawAvp, String> {
    let name = required(node, "name")?.to_string();
    let code: u32 = number(node, "code")?;
    let m_rule = match node.attribute("mandatory").map(str::trim) {
        Some(m) if m.eq_ignore_ascii_case("must") => FlagRule::Must,
        Some(m) if m.eq_ignore_ascii_case("mustnot") => FlagRule::MustNot,
        _ => FlagRule::May,
    };
    let mut avp = RawAvp {
        name,
        code,
        vendor: vendor_attr(node),
        m_rule,
        type_name: None,
        grouped: false,
        members: Vec::new(),
        enums: Vec::new(),
        file: file.to_string(),
        line,
    };
    for c in node.children().filter(roxmltree::Node::is_element) {
        match c.tag_name().name() {
            "type" => {
                avp.type_name = Some(
                    required(c, "type-name")
                        .map_err(|m| format!("AVP {}: {m}", avp.name))?
                        .to_string(),
                )
            }
            "grouped" => {
                avp.grouped = true;
                for g in c.children().filter(|n| n.has_tag_name("gavp")) {
                    let member =
                        required(g, "name").map_err(|m| format!("AVP {}: {m}", avp.name))?;
                    avp.members.push(member.to_string());
                }
            }
            "enum" => {
                let value = enum_code(c).map_err(|m| format!("AVP {}: {m}", avp.name))?;
                let name = c.attribute("name").unwrap_or("").trim().to_string();
                avp.enums.push((value, name));
            }
            _ => {}
        }
    }
    Ok(avp)
}

/// An `<enum code>`: an Integer32 value, or an Unsigned32 one (Wireshark lists 4294967295 for
/// "OTHER") read as the Integer32 with the same four octets.
fn enum_code(node: roxmltree::Node<'_, '_>) -> Result<i32, String> {
    let v: i64 = number(node, "code")?;
    i32::try_from(v)
        .or_else(|_| u32::try_from(v).map(|u| i32::from_be_bytes(u.to_be_bytes())))
        .map_err(|_| format!("<enum> code {v} does not fit in 32 bits"))
}

fn vendor_attr(node: roxmltree::Node<'_, '_>) -> Option<String> {
    node.attribute("vendor-id")
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// A non-empty attribute, trimmed.
fn required<'a>(node: roxmltree::Node<'a, '_>, attr: &str) -> Result<&'a str, String> {
    match node.attribute(attr).map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(format!(
            "<{}> needs attribute {attr}",
            node.tag_name().name()
        )),
    }
}

fn number<T: std::str::FromStr>(node: roxmltree::Node<'_, '_>, attr: &str) -> Result<T, String> {
    let v = required(node, attr)?;
    v.parse().map_err(|_| {
        format!(
            "<{}> attribute {attr}={v:?} is not a valid number",
            node.tag_name().name()
        )
    })
}

/// Parses with a DTD allowed (Wireshark's top file has one); an error names the file and the
/// line roxmltree found.
fn parse_xml<'a>(text: &'a str, file: &str) -> Result<roxmltree::Document<'a>, DictionaryError> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    roxmltree::Document::parse_with_options(text, options).map_err(|e| {
        let pos = e.pos();
        let full = e.to_string();
        let message = full
            .strip_suffix(&format!(" at {pos}"))
            .unwrap_or(&full)
            // The wrapper of an included file is ours, not the operator's.
            .replace(
                &format!(", not '{ENTITY_ROOT}'"),
                " before the end of the file",
            );
        DictionaryError::Definition {
            file: file.to_string(),
            line: pos.row,
            message,
        }
    })
}

/// Where a system identifier points: below `dir`, or an error saying why not.
fn entity_path(dir: &Path, system: &str) -> Result<PathBuf, String> {
    let refuse = || {
        format!(
            "system identifier {system:?} must be a relative path below {} (no '..', no absolute path, no URL)",
            if dir.as_os_str().is_empty() {
                "the dictionary's directory".to_string()
            } else {
                dir.display().to_string()
            }
        )
    };
    if system.trim().is_empty() || system.contains(':') {
        return Err(refuse());
    }
    let relative = Path::new(system);
    for c in relative.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(refuse())
            }
        }
    }
    Ok(dir.join(relative))
}

/// An included file's `<?xml …?>` text declaration (XML 1.0 §4.3.1) turned into blanks, so
/// that lines and columns stay where they are; a byte order mark dropped.
fn blank_text_declaration(text: &str) -> String {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let is_decl = text
        .strip_prefix("<?xml")
        .and_then(|r| r.chars().next())
        .is_some_and(|c| c.is_ascii_whitespace() || c == '?');
    if !is_decl {
        return text.to_string();
    }
    let Some(end) = text.find("?>").map(|e| e + 2) else {
        return text.to_string();
    };
    let mut out = String::with_capacity(text.len());
    out.extend(
        text[..end]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' }),
    );
    out.push_str(&text[end..]);
    out
}

/// Byte offset → line number (1-based) of one text.
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Lines {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        Lines(starts)
    }

    fn at(&self, offset: usize) -> u32 {
        let line = self.0.partition_point(|&s| s <= offset);
        u32::try_from(line).unwrap_or(u32::MAX)
    }
}

/// The top file with each `&name;` reference to a declared external entity in element
/// content replaced by an `<ENTITY_ELEMENT name="name"/>` on the same line, and the declared
/// external entities. Comments, CDATA sections, processing instructions and tags are copied
/// as they are. Errors are (line, message).
fn expand_references(
    text: &str,
    lines: &Lines,
) -> Result<(String, HashMap<String, Entity>), (u32, String)> {
    let Some(doctype) = find_doctype(text) else {
        return Ok((text.to_string(), HashMap::new()));
    };
    let entities = entity_declarations(text, doctype.subset.clone(), lines);
    if entities.is_empty() {
        return Ok((text.to_string(), entities));
    }
    let mut out = String::with_capacity(text.len() + 64 * entities.len());
    out.push_str(&text[..doctype.end]);
    let mut i = doctype.end;
    let mut references = 0;
    while i < text.len() {
        let rest = &text[i..];
        let Some(next) = rest.find(['<', '&']) else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..next]);
        i += next;
        if text[i..].starts_with('<') {
            let end = markup_end(text, i);
            out.push_str(&text[i..end]);
            i = end;
            continue;
        }
        match reference_at(text, i) {
            Some((name, end)) if entities.contains_key(name) => {
                references += 1;
                if references > MAX_ENTITY_REFERENCES {
                    return Err((
                        lines.at(i),
                        format!("more than {MAX_ENTITY_REFERENCES} external entity references"),
                    ));
                }
                out.push_str(&format!("<{ENTITY_ELEMENT} name=\"{name}\"/>"));
                i = end;
            }
            _ => {
                out.push('&');
                i += 1;
            }
        }
    }
    Ok((out, entities))
}

struct Doctype {
    /// The internal subset, between `[` and `]`.
    subset: std::ops::Range<usize>,
    /// Just after the closing `>`.
    end: usize,
}

/// The document type declaration with an internal subset, if the prolog has one.
fn find_doctype(text: &str) -> Option<Doctype> {
    let mut i = if text.starts_with('\u{feff}') { 3 } else { 0 };
    loop {
        let rest = &text[i..];
        let trimmed = rest.trim_start();
        i += rest.len() - trimmed.len();
        if trimmed.starts_with("<!DOCTYPE") {
            break;
        }
        if trimmed.starts_with("<?") || trimmed.starts_with("<!--") {
            i = markup_end(text, i);
            continue;
        }
        return None;
    }
    // '<!DOCTYPE' Name ExternalID? '[' intSubset ']' '>'
    let mut j = i + "<!DOCTYPE".len();
    let start = loop {
        let b = *text.as_bytes().get(j)?;
        match b {
            b'"' | b'\'' => j = after_quote(text, j),
            b'[' => break j + 1,
            b'>' => return None,
            _ => j += 1,
        }
    };
    let mut j = start;
    let subset_end = loop {
        let rest = text.get(j..)?;
        if rest.starts_with("<!--") || rest.starts_with("<?") {
            j = markup_end(text, j);
            continue;
        }
        match *text.as_bytes().get(j)? {
            b'"' | b'\'' => j = after_quote(text, j),
            b']' => break j,
            _ => j += rest.chars().next().map_or(1, char::len_utf8),
        }
    };
    let close = text[subset_end..].find('>')? + subset_end;
    Some(Doctype {
        subset: start..subset_end,
        end: close + 1,
    })
}

/// The external general entities declared in the internal subset.
fn entity_declarations(
    text: &str,
    subset: std::ops::Range<usize>,
    lines: &Lines,
) -> HashMap<String, Entity> {
    let mut entities = HashMap::new();
    let mut j = subset.start;
    while j < subset.end {
        let rest = &text[j..subset.end];
        if rest.starts_with("<!--") || rest.starts_with("<?") {
            j = markup_end(text, j);
            continue;
        }
        if rest.starts_with("<!ENTITY") {
            let end = markup_end(text, j).min(subset.end);
            let decl = &text[j + "<!ENTITY".len()..end];
            let tokens = tokens(decl.trim_end_matches('>'));
            let tok = |k: usize| tokens.get(k).map(String::as_str);
            let system = match (tok(0), tok(1)) {
                // A parameter entity is only used inside the DTD.
                (Some("%"), _) => None,
                (Some(_), Some("SYSTEM")) => tok(2),
                (Some(_), Some("PUBLIC")) => tok(3),
                _ => None,
            };
            // An unparsed (NDATA) entity cannot be referenced in content.
            if let (Some(name), Some(system)) = (tok(0), system) {
                if !tokens.iter().any(|t| t == "NDATA") {
                    entities.entry(name.to_string()).or_insert_with(|| Entity {
                        system: system.to_string(),
                        line: lines.at(j),
                    });
                }
            }
            j = end;
            continue;
        }
        j += rest.chars().next().map_or(1, char::len_utf8);
    }
    entities
}

/// Splits a declaration into blank-separated tokens; a quoted token loses its quotes.
fn tokens(decl: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = decl.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_ascii_whitespace() {
            chars.next();
        } else if c == '"' || c == '\'' {
            chars.next();
            let from = start + 1;
            let mut to = decl.len();
            for (k, d) in chars.by_ref() {
                if d == c {
                    to = k;
                    break;
                }
            }
            out.push(decl[from..to].to_string());
        } else {
            let mut to = decl.len();
            while let Some(&(k, d)) = chars.peek() {
                if d.is_ascii_whitespace() || d == '"' || d == '\'' {
                    to = k;
                    break;
                }
                chars.next();
            }
            out.push(decl[start..to].to_string());
        }
    }
    out
}

/// Just after the markup starting with `<` at `i`: a comment, CDATA section, processing
/// instruction, declaration or tag (quotes honoured). The end of the text when it is not
/// closed: the XML parser then reports it.
fn markup_end(text: &str, i: usize) -> usize {
    let rest = &text[i..];
    let until = |close: &str, skip: usize| {
        rest.get(skip..)
            .and_then(|r| r.find(close))
            .map_or(text.len(), |p| i + skip + p + close.len())
    };
    if rest.starts_with("<!--") {
        return until("-->", 4);
    }
    if rest.starts_with("<![CDATA[") {
        return until("]]>", 9);
    }
    if rest.starts_with("<?") {
        return until("?>", 2);
    }
    let mut j = i + 1;
    while let Some(&b) = text.as_bytes().get(j) {
        match b {
            b'"' | b'\'' => j = after_quote(text, j),
            b'>' => return j + 1,
            _ => j += 1,
        }
    }
    text.len()
}

/// Just after the quoted string starting at `i` (the end of the text when it is not closed).
fn after_quote(text: &str, i: usize) -> usize {
    let q = char::from(text.as_bytes()[i]);
    text[i + 1..].find(q).map_or(text.len(), |p| i + 1 + p + 1)
}

/// The entity reference `&name;` at `i`: its name and the offset just after it.
fn reference_at(text: &str, i: usize) -> Option<(&str, usize)> {
    let rest = text.get(i + 1..)?;
    // Names are short; a bounded look-ahead keeps a text full of '&' linear.
    let (semi, _) = rest.char_indices().take(256).find(|(_, c)| *c == ';')?;
    let name = &rest[..semi];
    let is_name = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':') || !c.is_ascii());
    is_name.then_some((name, i + 1 + semi + 1))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test

    use super::*;

    /// A fresh directory for one test's files.
    fn dir(test: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("tollgate-wireshark-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const TOP: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE dictionary SYSTEM "dictionary.dtd" [
	<!-- a comment with ] and > in it -->
	<!ENTITY Acme		SYSTEM "acme.xml">
	<!ENTITY Unused		SYSTEM "missing.xml">
]>
<dictionary>
	<base uri="http://www.ietf.org/rfc/rfc6733.txt">
		<command name="Capabilities-Exchange" code="257" vendor-id="None"/>
		<typedefn type-name="OctetString"/>
		<typedefn type-name="UTF8String" type-parent="OctetString"/>
		<typedefn type-name="IPAddress" type-parent="OctetString"/>
		<typedefn type-name="Enumerated" type-parent="Integer32"/>
		<typedefn type-name="Phone-Number" type-parent="UTF8String"/>
		<typedefn type-name="Chained" type-parent="Phone-Number"/>
		<typedefn type-name="Mystery"/>
		<avp name="Origin-Host" code="264" mandatory="must">
			<type type-name="DiameterIdentity"/>
		</avp>
		<avp name="Host-IP-Address" code="257" mandatory="must">
			<type type-name="IPAddress"/>
		</avp>
		<avp name="Auth-Application-Id" code="258" mandatory="must">
			<type type-name="AppId"/>
		</avp>
	</base>
	<application id="16777999" name="Acme Charging">
		<command name="Acme-Charge" code="9999" vendor-id="acme"/>
	</application>
	<vendor vendor-id="None" code="0" name="None"/>
	<vendor vendor-id="Acme" code="99999" name="Acme Networks"/>
	<!-- &Unused; is only mentioned in a comment -->
	&Acme;
</dictionary>
"#;

    const ACME: &str = r#"<?xml version="1.0" encoding="UTF-8"?>

<vendor vendor-id="Acme" code="1" name="a later declaration of the name does not count"/>
<application id="16777999" name="Acme Charging">
	<avp name="Acme-Phone" code="1" vendor-id="ACME" mandatory="mustnot">
		<type type-name="Phone-Number"/>
	</avp>
	<avp name="Acme-Chained" code="2" vendor-id="Acme">
		<type type-name="Chained"/>
	</avp>
	<avp name="Acme-Mystery" code="3" vendor-id="Acme">
		<type type-name="Mystery"/>
	</avp>
	<avp name="Acme-Unknown-Type" code="4" vendor-id="Acme">
		<type type-name="NoSuchType"/>
	</avp>
	<avp name="Acme-State" code="5" vendor-id="Acme" mandatory="must">
		<type type-name="Enumerated"/>
		<enum name="OTHER" code="4294967295"/>
		<enum name="ON" code="1"/>
		<enum name="OFF" code="0"/>
	</avp>
	<avp name="Acme-Group" code="6" vendor-id="Acme">
		<grouped>
			<gavp name="acme-phone "/>
			<gavp name="Acme-State"/>
			<gavp name="Not-Defined-Anywhere"/>
		</grouped>
	</avp>
	<avp name="Acme-Counter" code="7" vendor-id="Acme">
		<type type-name="VendorId"/>
	</avp>
</application>
"#;

    fn acme() -> (PathBuf, WiresharkDictionary) {
        let d = dir("acme");
        let top = write(&d, "dictionary.xml", TOP);
        write(&d, "acme.xml", ACME);
        let ws = WiresharkDictionary::read(&top).unwrap();
        (d, ws)
    }

    #[test]
    fn external_entities_are_read_from_beside_the_top_file() {
        let (d, ws) = acme();
        let dict = Dictionary::from_wireshark(&ws).unwrap();
        // Defined in acme.xml, reached through &Acme; (its text declaration dropped).
        let phone = dict.avp(1, 99999).unwrap();
        assert_eq!(phone.name, "Acme-Phone");
        // The entity only a comment mentions is not read (missing.xml does not exist).
        assert_eq!(ws.avp_count(), 10);
        // An error in an included file names that file and its own line.
        write(
            &d,
            "acme.xml",
            "<?xml version=\"1.0\"?>\n\n<avp name=\"X\" code=\"oops\"/>\n",
        );
        let e = WiresharkDictionary::read(&d.join("dictionary.xml")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("acme.xml:3:") && text.contains("\"oops\""),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn vendor_names_resolve_to_codes_ignoring_case_and_later_redeclarations() {
        let (d, ws) = acme();
        let dict = Dictionary::from_wireshark(&ws).unwrap();
        // vendor-id="ACME" and "Acme" both name code 99999, not the later code 1.
        assert!(dict.avp(1, 99999).is_some());
        assert!(dict.avp(2, 99999).is_some());
        assert!(dict.avp(1, 1).is_none());
        // Commands name vendors too; "None" is vendor 0.
        let cmd = dict
            .command(crate::ApplicationId(16777999), crate::CommandCode(9999))
            .unwrap();
        assert_eq!(cmd.name, "Acme-Charge");
        assert!(cmd.request.any_other && cmd.request.rules.is_empty());
        assert!(dict
            .command(crate::ApplicationId(0), crate::CommandCode(257))
            .is_some());
        // Alone, Wireshark's application names are the only ones; merged with ours, describing
        // an application is not serving it, so none is added.
        assert_eq!(
            dict.application_name(crate::ApplicationId(16777999)),
            Some("Acme Charging")
        );
        let merged = Dictionary::with_wireshark::<&str>(&[], &ws).unwrap();
        assert!(!merged.has_application(crate::ApplicationId(16777999)));
        assert!(merged
            .command(crate::ApplicationId(16777999), crate::CommandCode(9999))
            .is_some());

        // An AVP naming a vendor nobody declares is refused with its file and line.
        write(
            &d,
            "acme.xml",
            "<avp name=\"Stray\" code=\"1\" vendor-id=\"Nobody\"><type type-name=\"Unsigned32\"/></avp>\n",
        );
        let e = WiresharkDictionary::read(&d.join("dictionary.xml")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("acme.xml:1:") && text.contains("\"Nobody\""),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn types_follow_typedefn_aliases_and_fall_back_to_octet_string() {
        let (d, ws) = acme();
        let dict = Dictionary::from_wireshark(&ws).unwrap();
        let t = |code, vendor| dict.avp(code, vendor).unwrap().avp_type;
        assert_eq!(t(264, 0), AvpType::DiameterIdentity);
        assert_eq!(t(257, 0), AvpType::Address, "IPAddress is RFC 6733 Address");
        assert_eq!(t(258, 0), AvpType::Unsigned32, "AppId");
        assert_eq!(t(7, 99999), AvpType::Unsigned32, "VendorId");
        assert_eq!(
            t(1, 99999),
            AvpType::UTF8String,
            "Phone-Number → UTF8String"
        );
        assert_eq!(
            t(2, 99999),
            AvpType::UTF8String,
            "Chained → Phone-Number → …"
        );
        assert_eq!(t(3, 99999), AvpType::OctetString, "typedefn without parent");
        assert_eq!(t(4, 99999), AvpType::OctetString, "unknown type name");
        assert_eq!(t(5, 99999), AvpType::Enumerated);

        let state = dict.avp(5, 99999).unwrap();
        assert_eq!(state.item_name(1), Some("ON"));
        assert_eq!(state.item_name(-1), Some("OTHER"), "4294967295 on the wire");
        assert_eq!(state.m_rule, FlagRule::Must);
        assert_eq!(dict.avp(1, 99999).unwrap().m_rule, FlagRule::MustNot);
        assert_eq!(dict.avp(2, 99999).unwrap().m_rule, FlagRule::May);

        // Grouped: members matched on trimmed names ignoring case, unknown ones dropped,
        // and anything else admitted.
        let g = dict.avp(6, 99999).unwrap().grammar.as_ref().unwrap();
        let names: Vec<_> = g.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["Acme-Phone", "Acme-State"]);
        assert!(g.any_other);
        assert!(g
            .rules
            .iter()
            .all(|r| r.min == 0 && r.max.is_none() && !r.fixed));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn ours_win_and_clashing_names_are_renamed() {
        let d = dir("merge");
        let top = write(
            &d,
            "dictionary.xml",
            r#"<dictionary>
  <base>
    <command name="Credit-Control" code="272" vendor-id="None"/>
    <command name="Re-Auth" code="258" vendor-id="None"/>
    <avp name="3GPP-SIP-Method" code="824" vendor-id="TGPP"><type type-name="OctetString"/></avp>
    <avp name="SIP-Method" code="393"><type type-name="UTF8String"/></avp>
    <avp name="Session-Id" code="263" mandatory="may"><type type-name="OctetString"/></avp>
    <avp name="Twice" code="70000"><type type-name="Unsigned32"/></avp>
    <avp name="Twice-Replaced" code="70000"><type type-name="Integer64"/></avp>
    <avp name="Holder" code="70001">
      <grouped><gavp name="3GPP-SIP-Method"/><gavp name="sip-method"/><gavp name="Twice"/></grouped>
    </avp>
  </base>
  <application id="4" name="Wireshark's name for it"/>
  <vendor vendor-id="TGPP" code="10415" name="3GPP"/>
</dictionary>
"#,
        );
        let ws = WiresharkDictionary::read(&top).unwrap();
        let files: [&str; 0] = [];
        let dict = Dictionary::with_wireshark(&files, &ws).unwrap();
        let ours = Dictionary::builtin();

        // Ours on code+vendor: name, type and M rule.
        let m = dict.avp(824, 10415).unwrap();
        assert_eq!(m.name, "SIP-Method");
        assert_eq!(m.avp_type, ours.avp(824, 10415).unwrap().avp_type);
        assert_eq!(dict.avp(263, 0).unwrap().m_rule, FlagRule::Must);
        // Wireshark's other SIP-Method is kept under a name of its own.
        let rfc4740 = dict.avp(393, 0).unwrap();
        assert_eq!(rfc4740.name, "wireshark:SIP-Method");
        assert_eq!(
            dict.avp_by_name("wireshark:SIP-Method").map(|a| a.code),
            Some(393)
        );
        // The later of two definitions of one code wins, as in Wireshark.
        let twice = dict.avp(70000, 0).unwrap();
        assert_eq!(
            (twice.name.as_str(), twice.avp_type),
            ("Twice-Replaced", AvpType::Integer64)
        );
        // Members are named as the merged dictionary names them.
        let g = dict.avp(70001, 0).unwrap().grammar.as_ref().unwrap();
        let names: Vec<_> = g.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["SIP-Method", "wireshark:SIP-Method", "Twice-Replaced"]
        );
        // Our command grammars stay; Wireshark's command of another application is added.
        let ccr = dict
            .command(crate::ApplicationId(4), crate::CommandCode(272))
            .unwrap();
        assert!(!ccr.request.rules.is_empty());
        assert_eq!(
            dict.application_name(crate::ApplicationId(4)),
            ours.application_name(crate::ApplicationId(4))
        );
        let rar0 = dict
            .command(crate::ApplicationId(0), crate::CommandCode(258))
            .unwrap();
        assert!(rar0.request.any_other);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn malformed_files_are_errors_with_file_and_line_never_panics() {
        let d = dir("malformed");
        let top = d.join("dictionary.xml");
        let cases: &[(&str, &str)] = &[
            // Unclosed element.
            ("<dictionary>\n<base>\n<avp name=\"A\" code=\"1\">\n</base>\n", ":4:"),
            ("<dictionary>\n  <avp code=\"1\"><type type-name=\"Unsigned32\"/></avp>\n</dictionary>", ":2:"),
            ("<dictionary>\n\n<application id=\"x\"/>\n</dictionary>", ":3:"),
            ("<dictionary>\n<avp name=\"E\" code=\"1\"><type type-name=\"Enumerated\"/>\n<enum name=\"big\" code=\"99999999999\"/></avp>\n</dictionary>", ":2:"),
            ("<diameter/>", ":1:"),
            ("", ":1:"),
            // An undeclared entity.
            ("<dictionary>\n&nowhere;\n</dictionary>", ":2:"),
            // Paths that leave the directory.
            ("<!DOCTYPE d [\n<!ENTITY up SYSTEM \"../etc/passwd\">\n]>\n<dictionary>&up;</dictionary>", ":2:"),
            ("<!DOCTYPE d [\n\n<!ENTITY abs SYSTEM \"/etc/passwd\">\n]>\n<dictionary>&abs;</dictionary>", ":3:"),
            ("<!DOCTYPE d [<!ENTITY url SYSTEM \"http://example.com/x.xml\">]>\n<dictionary>&url;</dictionary>", ":1:"),
            // A declared file that is not there.
            ("<!DOCTYPE d [\n<!ENTITY gone SYSTEM \"gone.xml\">\n]>\n<dictionary>&gone;</dictionary>", ":2:"),
            // Broken prologs and subsets.
            ("<!DOCTYPE d [ <!ENTITY x SYSTEM \"unterminated", ":1:"),
            ("<!DOCTYPE d [ <!-- never closed", ":1:"),
            ("<!DOCTYPE", ":1:"),
            ("<dictionary>&", ":1:"),
            ("<dictionary><avp name=\"a>b", ":1:"),
        ];
        for (text, line) in cases {
            std::fs::write(&top, text).unwrap();
            let msg = match WiresharkDictionary::read(&top) {
                Ok(_) => panic!("{text:?} should be refused"),
                Err(e) => e.to_string(),
            };
            assert!(
                msg.contains("dictionary.xml") && msg.contains(line),
                "{text:?}: {msg}"
            );
        }
        // An included file's own references are not expanded (no recursion) and are named.
        std::fs::write(
            &top,
            "<!DOCTYPE d [<!ENTITY a SYSTEM \"a.xml\">]>\n<dictionary>&a;</dictionary>",
        )
        .unwrap();
        write(&d, "a.xml", "<vendor vendor-id=\"V\" code=\"7\"/>\n&a;\n");
        let msg = WiresharkDictionary::read(&top).unwrap_err().to_string();
        assert!(msg.contains("a.xml:2:") && msg.contains("'a'"), "{msg}");
        // An included file left open is reported at its end, in its own words.
        write(
            &d,
            "a.xml",
            "<application id=\"1\">\n<avp name=\"A\" code=\"1\"/>\n",
        );
        let msg = WiresharkDictionary::read(&top).unwrap_err().to_string();
        assert!(
            msg.contains("a.xml:3:") && !msg.contains(ENTITY_ROOT),
            "{msg}"
        );
        // A missing top file.
        let msg = WiresharkDictionary::read(&d.join("nope.xml"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("nope.xml") && msg.contains("cannot read"),
            "{msg}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // Every prefix of a well-formed file and a few mutations: errors, not panics.
        let d = dir("prefixes");
        let top = d.join("dictionary.xml");
        write(&d, "acme.xml", ACME);
        let mut inputs: Vec<String> = (0..TOP.len())
            .filter(|&n| TOP.is_char_boundary(n))
            .step_by(7)
            .map(|n| TOP[..n].to_string())
            .collect();
        inputs.push(TOP.replace('>', ""));
        inputs.push(TOP.replace('"', "'"));
        inputs.push(TOP.replace("]>", ""));
        inputs.push(TOP.replace('&', "&&"));
        for text in inputs {
            std::fs::write(&top, &text).unwrap();
            let _ = WiresharkDictionary::read(&top).map(|ws| Dictionary::from_wireshark(&ws));
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn reference_limit_is_enforced() {
        let d = dir("limit");
        write(&d, "e.xml", "");
        let mut text = String::from("<!DOCTYPE d [<!ENTITY e SYSTEM \"e.xml\">]>\n<dictionary>\n");
        for _ in 0..=MAX_ENTITY_REFERENCES {
            text.push_str("&e;");
        }
        text.push_str("\n</dictionary>");
        let top = write(&d, "dictionary.xml", &text);
        let msg = WiresharkDictionary::read(&top).unwrap_err().to_string();
        assert!(
            msg.contains("dictionary.xml:3:") && msg.contains("references"),
            "{msg}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}

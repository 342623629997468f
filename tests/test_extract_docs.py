"""Documentation pages (Sphinx, DocBook, MkDocs, Docusaurus markup): code, tables and anchors survive."""

from pathlib import Path

import pytest

from kbindex.extract import extract
from kbindex.records import Page

FIXTURES = Path(__file__).parent / "fixtures" / "extract"


def _doc(name: str, source: str | None = None):
    body = (FIXTURES / name).read_bytes()
    return extract(Page(source=source or f"https://docs.example.org/{name}", body=body,
                        content_type="text/html"))


def _section(doc, anchor):
    matches = [s for s in doc.sections if s.anchor == anchor]
    assert matches, [s.anchor for s in doc.sections]
    return matches[0]


def test_sphinx_page_keeps_doctest_code_tables_and_api_anchors():
    doc = _doc("sphinx-json.html")
    assert doc.title == "json — JSON encoder and decoder"
    top = _section(doc, "module-json")
    # Code verbatim: prompts, quotes and the 4-space indentation of pretty-printed JSON.
    assert ">>> print(json.dumps({'4': 5, '6': 7}, sort_keys=True, indent=4))\n{\n    \"4\": 5," in top.text
    dump = _section(doc, "json.dump")
    assert dump.heading_path == ("Basic Usage", "json.dump")
    assert "json.dump(obj, fp, *, skipkeys=False, ensure_ascii=True, indent=None)" in dump.text
    assert "Changed in version 3.2" in dump.text
    decoder = _section(doc, "json.JSONDecoder")
    assert "JSON | Python\nobject | dict\narray | list" in decoder.text  # the conversion table, as rows
    assert doc.metadata["canonical"] == "https://docs.python.org/3/library/json.html"
    assert doc.metadata["language"] == "en"
    text = doc.text
    for chrome in ("SIDEBARTOC", "PREVTOPIC", "FOOTERCOPYRIGHT", "Quick search", "Report a Bug"):
        assert chrome not in text


def test_docbook_page_keeps_function_table_synopsis_and_section_ids():
    doc = _doc("docbook-functions-string.html")
    assert doc.title == "9.4. String Functions and Operators"
    top = _section(doc, "FUNCTIONS-STRING")
    assert "btrim('xyxtrimyyx', 'xyz') → trim" in top.text
    assert "Table 9.9. SQL String Functions and Operators" in top.text
    fmt = _section(doc, "FUNCTIONS-STRING-FORMAT")
    assert fmt.heading_path == ("9.4.1. format",)
    assert ("CREATE FUNCTION quote_all(tbl text) RETURNS text AS $$\nBEGIN\n"
            "    RETURN format('SELECT * FROM %I', tbl);\nEND;") in fmt.text
    assert "SELECT format('Hello %s', 'World');\nResult: Hello World" in fmt.text
    for chrome in ("NAVHEADERTEXT", "NAVFOOTERTEXT", "Prev", "Home"):
        assert chrome not in doc.text


def test_mkdocs_page_keeps_highlighted_code_option_table_and_definitions():
    doc = _doc("mkdocs-config.html")
    assert doc.title == "Configuration"
    assert _section(doc, "options").text.splitlines()[1] == "interval | 300 | Seconds between two sync passes."
    # Material's line-numbered code markup, which trafilatura alone drops.
    assert _section(doc, "example").text.startswith("[sync]\ninterval = 60\nretries  = 3")
    assert "AGENT_INTERVAL\n  Overrides interval." in _section(doc, "environment-variables").text
    assert doc.metadata["author"] == "Platform Team"
    assert doc.metadata["canonical"] == "https://docs.example.org/agent/configuration/"
    for chrome in ("NAVTEXT", "TOCTEXT", "HEADERTEXT", "PREVTEXT", "FOOTERTEXT"):
        assert chrome not in doc.text


def test_docusaurus_page_keeps_prism_code_lines_and_parameter_table():
    doc = _doc("docusaurus-retries.html")
    assert doc.title == "Retrying requests"
    code = _section(doc, "configure-the-policy").text
    # Prism writes each line in its own span ending in <br>: the line breaks must survive.
    assert code == ("const client = new AcmeClient({\n  retries: { maxAttempts: 4, baseDelayMs: 250 },\n"
                    "});")
    params = _section(doc, "parameters")
    assert params.heading_path == ("Configure the policy", "Parameters")
    assert "maxAttempts | number | 3 | Attempts including the first call" in params.text
    assert "- A Retry-After header overrides the computed delay." in params.text
    assert doc.metadata["published"] == "2024-02-10" and doc.metadata["modified"] == "2024-05-02"
    for chrome in ("NAVBARTEXT", "SIDEBARTEXT", "BREADCRUMBTEXT", "TOCTEXT", "PAGINATIONTEXT",
                   "EDITPAGETEXT", "COPYBUTTONTEXT", "FOOTERTEXT"):
        assert chrome not in doc.text


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.html")))
def test_every_section_of_a_doc_page_links_to_an_anchor_in_the_page(name):
    body = (FIXTURES / name).read_text(encoding="utf-8")
    doc = _doc(name)
    assert doc.sections
    for section in doc.sections[1:]:
        assert section.anchor and (f'id="{section.anchor}"' in body), section.heading


def test_steps_with_code_keep_the_code_verbatim():
    page = b"""<html><body><article><h1>Rotate the key</h1>
    <p>Rotate the signing key once a year, or at once when it may have leaked.</p>
    <ol><li><p>Create the new key:</p><pre>openssl genpkey -algorithm ed25519 \\
    -out new.pem</pre></li><li><p>Restart the service.</p></li></ol>
    <p>Old tokens stay valid until they expire, so nobody is signed out.</p></article></body></html>"""
    doc = extract(Page(source="https://kb.example.com/rotate", body=page, content_type="text/html"))
    assert "openssl genpkey -algorithm ed25519 \\\n    -out new.pem" in doc.text
    assert "1. Create the new key:" in doc.text and "2. Restart the service." in doc.text


def test_sphinx_sections_whose_ids_look_like_chrome_are_kept():
    # Reduced from Python's own IDLE page (Doc/library/idle.rst as built by Sphinx): its
    # sections are <section id="menus"> and <section id="editing-and-navigation">, ids that
    # trafilatura prunes as navigation. They are article text and must be indexed.
    doc = _doc("sphinx-idle-menus.html")
    assert doc.title == "IDLE"
    assert "IDLE has two main window types, the Shell window and the Editor window." in _section(doc, "menus").text
    menu = _section(doc, "file-menu-shell-and-editor")
    assert menu.heading_path == ("Menus", "File menu (Shell and Editor)")
    assert "New File\n  Create a new file editing window." in menu.text
    assert "IDLE may open editor windows when it starts" in _section(doc, "editor-windows").text
    assert _section(doc, "startup-and-code-execution").text
    for chrome in ("Quick search", "Table of Contents", "Previous topic", "Report a Bug"):
        assert chrome not in doc.text


def test_sphinx_methods_nest_under_their_class_and_text_after_returns_to_the_section():
    page = b"""<html><body><div class="body" role="main"><section id="api">
    <h2>API<a class="headerlink" href="#api">\xc2\xb6</a></h2>
    <p>The client wraps every call of the service in one object with retries built in.</p>
    <dl class="py class"><dt class="sig sig-object py" id="acme.Client">class acme.Client(url)</dt>
    <dd><p>A connection to the service, opened lazily on the first request made.</p>
      <dl class="py method"><dt class="sig sig-object py" id="acme.Client.get">get(path)</dt>
      <dd><p>Fetch one resource and return its decoded JSON body to the caller.</p></dd></dl>
      <p>Clients are safe to share between threads once they are created.</p>
    </dd></dl>
    <p>Errors raise acme.Error with the status code and the message of the server.</p>
    </section></div></body></html>"""
    doc = extract(Page(source="https://docs.example.org/api.html", body=page, content_type="text/html"))
    where = {s.text.splitlines()[-1].strip()[:20]: (s.heading_path, s.anchor) for s in doc.sections}
    assert where["A connection to the "] == (("API", "acme.Client"), "acme.Client")
    assert where["Fetch one resource a"] == (("API", "acme.Client", "acme.Client.get"), "acme.Client.get")
    assert where["Clients are safe to "] == (("API", "acme.Client"), "acme.Client")
    assert where["Errors raise acme.Er"] == (("API",), "api")

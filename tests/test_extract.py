from kbindex.extract import extract
from kbindex.records import Page

PAGE = b"""<!doctype html><html lang="en"><head><title>Reset a printer | Helpdesk</title>
<meta name="description" content="How to bring a printer back online">
<script>var tracking = "SCRIPTTEXT";</script><style>.x{color:red}</style></head>
<body><header><a href="/">Northwind Helpdesk</a><nav><a href="/a">Menu link</a></nav></header>
<main><article>
<h1>Printer shows offline</h1>
<p>The spooler is the usual <b>culprit</b>.</p>
<h2 id="restart">Restart the spooler</h2>
<pre><code>net stop spooler
net start spooler</code></pre>
<ul><li>Open services</li><li>Find <code>Print Spooler</code></li></ul>
<h3 id="check">Check the status</h3>
<table><thead><tr><th>Setting</th><th>Value</th></tr></thead>
<tbody><tr><td>SNMP</td><td>off</td></tr></tbody></table>
<div class="related-posts"><h3>Related posts</h3><a href="/b">RELATEDTEXT</a></div>
<section id="comments"><p>COMMENTTEXT great post</p></section>
</article></main>
<aside><h3>Popular posts</h3><a href="/c">SIDEBARTEXT</a></aside>
<form><input name="email"> NEWSLETTERTEXT</form>
<footer>FOOTERTEXT (c) 2026</footer></body></html>"""


def test_html_keeps_article_and_drops_chrome():
    doc = extract(Page(source="https://kb.example.com/printer", body=PAGE, content_type="text/html"))
    text = doc.text
    assert doc.title == "Printer shows offline"
    for chrome in ("SCRIPTTEXT", "Menu link", "RELATEDTEXT", "COMMENTTEXT", "SIDEBARTEXT",
                   "NEWSLETTERTEXT", "FOOTERTEXT", "color:red"):
        assert chrome not in text
    assert "net stop spooler\nnet start spooler" in text  # code kept verbatim, lines intact
    assert "- Find Print Spooler" in text
    assert "Setting | Value" in text and "SNMP | off" in text
    assert "usual culprit." in text
    headings = [s.heading for s in doc.sections]
    assert headings == ["", "Restart the spooler", "Restart the spooler > Check the status"]
    assert doc.sections[1].anchor == "restart"
    assert doc.metadata["description"] == "How to bring a printer back online"
    assert doc.metadata["language"] == "en"


def test_markdown_headings_become_sections_and_code_fences_are_not_headings():
    md = b"# Guide\n\nIntro text.\n\n## Install\n\n```sh\n# not a heading\npip install x\n```\n\n### Linux\n\nUse apt.\n"
    doc = extract(Page(source="/kb/guide.md", body=md))
    assert doc.title == "Guide"
    assert [s.heading for s in doc.sections] == ["", "Install", "Install > Linux"]
    assert "# not a heading" in doc.sections[1].text


def test_rst_underlined_titles_become_sections():
    rst = b"Title\n=====\n\nIntro.\n\nPart one\n--------\n\nBody one::\n\n    code here\n\nPart two\n--------\n\nBody two.\n"
    doc = extract(Page(source="/kb/doc.rst", body=rst))
    assert doc.title == "Title"
    assert [s.heading for s in doc.sections] == ["", "Part one", "Part two"]
    assert "code here" in doc.sections[1].text


def test_plain_text_first_line_is_title():
    doc = extract(Page(source="/kb/note.txt", body=b"Battery drains\n\nIt drains overnight.\n"))
    assert doc.title == "Battery drains"
    assert doc.text == "It drains overnight."


def test_declared_charset_and_latin1_bytes():
    body = "<html><body><h1>Caf\u00e9</h1><p>cr\u00e8me br\u00fbl\u00e9e</p></body></html>".encode("latin-1")
    doc = extract(Page(source="http://x/p", body=body, content_type="text/html; charset=iso-8859-1"))
    assert doc.title == "Café"
    assert "crème brûlée" in doc.text


def test_utf8_bom_text_file():
    doc = extract(Page(source="/kb/a.txt", body="\ufeffT\u00edtulo\n\nTexto aqu\u00ed.".encode("utf-8")))
    assert doc.title == "Título"


def test_markdown_front_matter_uses_the_html_metadata_names():
    md = b"---\ntitle: \"VPN setup\"\nauthor: Ops Team\ndate: 2024-03-01\nlastmod: 2024-04-02\ntags: [vpn]\n---\n# Ignored heading\n\nText.\n"
    doc = extract(Page(source="/kb/vpn.md", body=md))
    assert doc.title == "VPN setup"
    assert doc.metadata == {"author": "Ops Team", "published": "2024-03-01", "modified": "2024-04-02"}


def test_rules_fallback_drops_chrome_and_reads_the_largest_article():
    # The path taken when trafilatura finds no article text that maps onto the page's blocks.
    from kbindex.extract import items_by_rules, parse_html, rendered

    tree = parse_html("""<html><body><header>SITEHEADER</header><nav>MENU</nav>
      <div class="sidebar-widget">WIDGET</div>
      <article><p>Short teaser.</p></article>
      <article><h2 id="fix">Fix</h2><p>Restart the agent service.</p>
        <div class="share-buttons">SHARE</div><ul><li>Step one</li></ul></article>
      <footer>FOOTER</footer></body></html>""")
    items = [rendered(i) for i in items_by_rules(tree)]
    assert [(i[2], i[3]) for i in items if i[0] == "heading"] == [("Fix", "fix")]
    assert [i[1] for i in items if i[0] == "text"] == ["Restart the agent service.", "- Step one"]

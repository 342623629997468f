"""Every block of the article survives extraction: lists anywhere, a list's lead text, link lists
that the article announces, definition lists, nested tables and lists in Word documents.

Case 08-lists (tests/fixtures/lists): lists directly under <body> vanished, and the text a list
holds before its first item was lost. The other inputs are made up.
"""

import io
from pathlib import Path

import pytest

from kbindex.extract import document_text, extract, extract_docx
from kbindex.files import read_file
from kbindex.records import Page
from tests.test_extract_files import make_pdf

CASE = Path(__file__).parent / "fixtures" / "lists"
INTRO = "in order of importance:"
CLOSING = "The helpdesk also reviewed the rollout schedule"


def _text(name: str) -> str:
    return document_text(extract(read_file(CASE / name)))


def _between(text: str, first: str, last: str) -> str:
    start, end = text.index(first) + len(first), text.index(last)
    assert start < end, "the list must stand between the two paragraphs"
    return text[start:end].strip()


def test_a_list_directly_under_body_is_kept_in_place():
    assert _between(_text("minimal.html"), INTRO, CLOSING).split("\n") == [
        "- The old client no longer receives security fixes from the vendor.",
        "- The new gateway supports modern ciphers and multi-factor prompts.",
        "- Split tunnelling is now available for video calls.",
        "- Logs are kept for ninety days instead of thirty.",
    ]


def test_an_ordered_list_directly_under_body_is_kept_with_its_numbers():
    assert _between(_text("body-ol.html"), INTRO, CLOSING).split("\n") == [
        "1. The old client no longer receives security fixes from the vendor.",
        "2. Split tunnelling is now available for video calls.",
    ]


def test_a_definition_list_directly_under_body_is_kept():
    assert _between(_text("body-dl.html"), INTRO, CLOSING).split("\n") == [
        "Split tunnelling", "  Now available for video calls."]


def test_the_lead_text_of_a_list_is_kept_before_its_items():
    text = _text("nested.html")
    assert "Install before the first sign-in:\n- Password manager\n- VPN client" in text
    assert "- Accounts\n  - Directory account\n  - Mailbox\n- Badge" in text


def _html(body: str, title: str = "Printer setup") -> str:
    return document_text(extract(Page(source="/kb/page.html", body=f"<html><head><title>{title}</title>"
                                      f"</head><body>{body}</body></html>".encode())))


P1 = ("<p>Before you call the helpdesk about a printer that shows as offline, check the following "
      "points one by one and note what you find.</p>")
P2 = ("<p>If all three are fine, restart the print spooler service from the Services console and "
      "print a test page to confirm that the queue works again.</p>")
STEPS = ["The printer is switched on and shows no error on its panel.",
         "The network cable is plugged in or the Wi-Fi light is steady.",
         "Your laptop is connected to the office network, not the guest network."]
OL = "<ol>" + "".join(f"<li>{s}</li>" for s in STEPS) + "</ol>"


@pytest.mark.parametrize("body", [
    f"<center><h1>Printer setup</h1></center><font face='Arial'>{P1}{OL}</font>{P2}",  # in <font>
    f"<h1>Printer setup</h1>{P1}<blockquote>{OL}</blockquote>{P2}",
    f"<h1>Printer setup</h1><span>{P1}<span class='steps'>{OL}</span></span>{P2}",
    f"<table><tr><td class='menu'><a href='/'>Home</a></td><td><h1>Printer setup</h1>{P1}{OL}{P2}"
    "</td></tr></table>",  # a layout table: the article in one of its cells
])
def test_a_list_in_an_unusual_container_is_kept(body):
    text = _html(body)
    assert "\n".join(f"{n}. {s}" for n, s in enumerate(STEPS, 1)) in text
    assert text.index("one by one") < text.index(STEPS[0]) < text.index("restart the print spooler")


def test_a_list_after_the_last_paragraph_is_kept_and_the_footer_links_are_not():
    text = _html(f"<div id='content'><h1>Printer setup</h1>{P1}{P2}{OL}</div>"
                 "<div class='footer-links'><ul><li><a href='/privacy'>Privacy</a></li>"
                 "<li><a href='/terms'>Terms of use</a></li></ul></div>")
    assert text.endswith("3. " + STEPS[2])
    assert "Privacy" not in text


def test_an_announced_list_of_links_is_content():
    # The project's own seed article ends with a "References:" list of links.
    text = _html(
        "<nav><ul><li><a href='/'>Home</a></li><li><a href='/kb'>Knowledge base</a></li></ul></nav>"
        "<article><h1>How text becomes embeddings</h1>"
        "<p>An embedding model turns a piece of text into a vector of a few hundred numbers; texts "
        "with similar meaning end up close together, which is what semantic search relies on.</p>"
        "<p>The text is first split into tokens by the model's own tokenizer, and the model reads at "
        "most a fixed number of them: anything beyond its window is silently cut off.</p>"
        "<p>References:</p><ul>"
        "<li><a href='https://arxiv.org/abs/1908.10084'>Sentence-BERT: Sentence Embeddings using "
        "Siamese BERT-Networks</a></li>"
        "<li><a href='https://www.sbert.net/'>SentenceTransformers documentation</a></li></ul>"
        "</article><footer><ul><li><a href='/privacy'>Privacy</a></li></ul></footer>",
        title="How text becomes embeddings")
    assert text.endswith("References:\n\n- Sentence-BERT: Sentence Embeddings using Siamese "
                         "BERT-Networks\n- SentenceTransformers documentation")
    assert "Knowledge base" not in text and "Privacy" not in text


def test_related_links_between_paragraphs_stay_out():
    related = ("<ul><li><a href='/a'>Printer drivers: which one to install</a></li>"
               "<li><a href='/b'>Scanning to e-mail from the office printers</a></li></ul>")
    text = _html(f"<article><h1>Printer setup</h1>{P1}{related}{P2}</article>")
    assert "Printer drivers" not in text and "restart the print spooler" in text


def test_definition_list_groups_in_divs_are_read():
    text = _html(f"<h1>Printer setup</h1>{P1}<dl><div><dt>Spooler</dt><dd>The service that queues "
                 f"print jobs.</dd></div><div><dt>Queue</dt><dd>Jobs waiting to print.</dd></div></dl>{P2}")
    assert "Spooler\n  The service that queues print jobs.\nQueue\n  Jobs waiting to print." in text


def _docx_with_nested_blocks() -> bytes:
    import docx
    from docx.oxml import OxmlElement

    document = docx.Document()
    document.add_paragraph("Port reference", style="Title")
    document.add_paragraph("The VPN client needs these ports open on the home router.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Protocol", "Details"
    table.cell(1, 0).text = "IPsec"
    details = table.cell(1, 1)
    details.text = "Open both:"
    details.add_paragraph("UDP 500 for IKE", style="List Bullet")
    details.add_paragraph("UDP 4500 for NAT traversal", style="List Bullet")
    nested = details.add_table(rows=2, cols=2)
    for row, values in zip(nested.rows, [("Router", "Setting"), ("FritzBox", "IPsec passthrough")], strict=True):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    # A content control (w:sdt) around a paragraph, as templates and cover pages have them.
    inside = document.add_paragraph("Ask the helpdesk for the pre-shared key.")
    sdt, content = OxmlElement("w:sdt"), OxmlElement("w:sdtContent")
    inside._p.addprevious(sdt)
    content.append(inside._p)
    sdt.append(content)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_nested_tables_lists_in_cells_and_content_controls_in_word_documents():
    doc = extract_docx(_docx_with_nested_blocks(), "/kb/ports.docx")
    assert doc.text.split("\n\n") == [
        "The VPN client needs these ports open on the home router.",
        "Protocol | Details\nIPsec | Open both: - UDP 500 for IKE - UDP 4500 for NAT traversal "
        "[Router | Setting; FritzBox | IPsec passthrough]",
        "Ask the helpdesk for the pre-shared key.",
    ]


def test_every_line_of_a_pdf_page_is_kept():
    lines = ["Before you start:", "- Back up the mailbox", "- Close Outlook", "Port | Use", "500 | IKE"]
    doc = extract(Page(source="/kb/steps.pdf", body=make_pdf([lines])))
    assert doc.text.split("\n") == lines

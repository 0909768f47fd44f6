"""The search page in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

Loads ``/``, types a query, presses Enter and expects the document with that exact text first; checks that
HTML in a document is shown as text (never run), that the page works from the keyboard, and that it fits a
phone screen. Screenshots: ``tmp_path``, plus ``/tmp/textcl_serve_screenshot.png`` (desktop) and
``/tmp/textcl_serve_phone.png`` (390x844) to look at. Skipped, with the reason, when Playwright or
Chromium is missing (``.ci/run`` installs Chromium where it can).
"""
from __future__ import annotations

import re
import shutil
import sys

import pytest

from test_serve_support import DOCS, build_index, live_server, serve_encoder, serve_model_dir  # noqa: F401
from textcl.serve import create_app

XSS = ("xss", "<script>window.__xss = 'title'</script>",
       'A document whose text holds markup: <img src=x onerror="window.__xss = \'text\'"> and <b>bold</b> words.',
       {"topic": "<i>security</i>"})
QUERY = DOCS[1][2]  # the Moonlight Sonata's text: its own nearest neighbour


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return ""


def _skip(reason: str):
    print(f"\ntest_serve_browser: SKIPPED: {reason}", file=sys.stderr)  # shown with -s; -ra lists it too
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip("Playwright is not installed (pip install -e '.[dev]')")
    executable = _chromium()
    if not executable:
        _skip("no Chromium on PATH: apt-get install -y chromium (.ci/run does this when it runs as root)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture()
def site(tmp_path, serve_model_dir, serve_encoder):
    index_dir = build_index(tmp_path / "ix", serve_model_dir, docs=DOCS + [XSS], encoder=serve_encoder)
    with live_server(create_app(index_dir, encoder=serve_encoder)) as url:
        yield url


def test_search_page_in_chromium(browser, site, tmp_path):
    # bypass_csp: lets Playwright evaluate its waits, and makes the markup check below test the page's own
    # escaping, without the Content-Security-Policy that would otherwise also block inline handlers
    context = browser.new_context(viewport={"width": 1100, "height": 820}, bypass_csp=True)
    page = context.new_page()
    page.goto(site + "/")
    assert page.evaluate("document.activeElement.id") == "q"  # autofocus: type straight away
    page.wait_for_function("document.getElementById('index-info').textContent.includes('13 documents')")

    page.keyboard.type(QUERY)
    page.keyboard.press("Enter")
    page.wait_for_selector("#results .result")
    first = page.locator("#results .result").first
    assert first.locator(".title").text_content() == "Moonlight Sonata"
    assert float(first.locator(".score").text_content()) == pytest.approx(1.0, abs=1e-3)
    assert "id: moonlight" in first.locator(".meta").text_content()
    assert "year: 1801" in first.locator(".meta").text_content()
    assert re.fullmatch(r"10 results · \d+\.\d ms in the server, \d+ ms round trip",
                        page.locator("#status").text_content())
    assert "q=" in page.url  # the search is a link
    page.screenshot(path=str(tmp_path / "search.png"), full_page=True)
    shutil.copy(tmp_path / "search.png", "/tmp/textcl_serve_screenshot.png")

    page.keyboard.press("ArrowDown")  # from the box to the first result, then on, then back
    assert page.evaluate("document.activeElement.querySelector('.title').textContent") == "Moonlight Sonata"
    page.keyboard.press("ArrowDown")
    assert page.evaluate("[...document.querySelectorAll('.result')].indexOf(document.activeElement)") == 1
    page.keyboard.press("Escape")
    assert page.evaluate("document.activeElement.id") == "q"

    # Markup inside documents is text: shown literally, never parsed or run.
    page.fill("#q", XSS[2])
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#results .title').textContent.includes('<script>')")
    first = page.locator("#results .result").first
    assert first.locator(".title").text_content() == XSS[1]
    assert '<img src=x onerror="window.__xss' in first.locator(".snippet").text_content()
    assert "topic: <i>security</i>" in first.locator(".meta").text_content()
    assert page.evaluate("window.__xss") is None
    assert page.locator("#results img, #results script, #results b, #results i").count() == 0

    # A bad request shows the server's message.
    page.goto(site + "/?q=" + "x" * 2001)
    page.wait_for_selector("#error:not([hidden])")
    assert "at most 2000 characters" in page.locator("#error").text_content()
    context.close()


def test_search_page_fits_a_phone(browser, site, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    page.goto(site + "/?q=" + QUERY.replace(" ", "+") + "&k=5")
    page.wait_for_selector("#results .result")
    assert page.locator("#results .result").count() == 5
    assert page.locator("#results .title").first.text_content() == "Moonlight Sonata"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
    assert page.evaluate("parseFloat(getComputedStyle(document.getElementById('q')).fontSize)") >= 16  # no zoom
    page.screenshot(path=str(tmp_path / "phone.png"))
    shutil.copy(tmp_path / "phone.png", "/tmp/textcl_serve_phone.png")
    context.close()


def test_liking_results_shows_recommendations_because_of_them(browser, site, tmp_path):
    """Like a result: the page asks POST /recommend with the liked ids (oldest first) and shows what it answers,
    each with the liked document it is most like; the likes live in the address, so a reload keeps them, and
    a liked id the index no longer holds is dropped."""
    context = browser.new_context(viewport={"width": 1100, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.goto(site + "/?q=" + QUERY.replace(" ", "+"))
    page.wait_for_selector("#results .result")
    assert page.locator("#for-you").is_hidden()  # nothing liked: no recommendations
    page.locator("#results .result").first.locator(".like").click()
    page.wait_for_selector("#recs .result")
    assert page.locator("#results .like").first.get_attribute("aria-pressed") == "true"
    assert page.locator("#liked").text_content() == "Moonlight Sonata"
    recs = page.locator("#recs .result")
    assert recs.count() == 5
    titles = [recs.nth(i).locator(".title").text_content() for i in range(5)]
    assert "Moonlight Sonata" not in titles  # the liked document is history: left out
    # with one liked document, every recommendation is because of it
    assert all(recs.nth(i).locator(".because").text_content().startswith("because you liked Moonlight Sonata")
               for i in range(5))
    assert "liked=moonlight" in page.url
    # a second like: the XSS document, whose title is markup, shown as text
    page.fill("#q", XSS[2])
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#results .title').textContent.includes('<script>')")
    page.locator("#results .result").first.locator(".like").click()
    page.wait_for_function("document.getElementById('liked').textContent.includes('<script>')")
    assert page.locator("#liked").text_content() == f"Moonlight Sonata · {XSS[1]}"
    assert page.evaluate("window.__xss") is None and page.locator("#for-you script").count() == 0
    page.screenshot(path=str(tmp_path / "recommend.png"), full_page=True)
    shutil.copy(tmp_path / "recommend.png", "/tmp/textcl_serve_recommend.png")

    # a reload keeps the likes (titles fetched by id); ids that are no document are dropped: one deleted, one
    # over the id limit (422), "..", which the browser would turn into the page's own address
    page.goto(site + "/?liked=gone&liked=" + "x" * 257 + "&liked=moonlight")
    page.wait_for_selector("#recs .result")
    assert page.locator("#liked").text_content() == "Moonlight Sonata"
    assert page.url.endswith("?liked=moonlight")
    # typing without searching changes no address: a like keeps the query of the results on show
    page.fill("#q", "not sent")
    page.locator("#recs .result").first.locator(".like").click()
    page.wait_for_function("document.getElementById('liked').textContent.includes(' · ')")
    assert "not+sent" not in page.url and "q=" not in page.url
    page.locator("#clear-liked").click()
    assert page.locator("#for-you").is_hidden() and "liked" not in page.url
    # a query the server refuses leaves the address (and the results) as they were
    page.goto(site + "/?q=" + QUERY.replace(" ", "+"))
    page.wait_for_selector("#results .result")
    before = page.url
    page.fill("#q", "x" * 2001)
    page.keyboard.press("Enter")
    page.wait_for_selector("#error:not([hidden])")
    assert page.url == before
    context.close()


def test_a_liked_document_without_a_title_is_named_by_the_start_of_its_text(browser, tmp_path, serve_model_dir,
                                                                             serve_encoder):
    """A catalogue indexed from a run's items.jsonl has no titles: the liked list and "because you liked" name a
    document by its text (cut at a word near 60 characters), not by its bare id."""
    docs = [(d[0], "", d[2], {}) for d in DOCS] + [("short", "", "Heat (1995). Action Crime Thriller", {})]
    index_dir = build_index(tmp_path / "ix", serve_model_dir, docs=docs, encoder=serve_encoder)
    with live_server(create_app(index_dir, encoder=serve_encoder)) as url:
        page = browser.new_page()
        page.goto(url + "/?liked=short&liked=moonlight")
        page.wait_for_selector("#recs .result")
        long = "The Piano Sonata No. 14 in C-sharp minor, known as the…"  # DOCS' moonlight text, cut at a word
        assert page.locator("#liked").text_content() == f"Heat (1995). Action Crime Thriller · {long}"
        because = [page.locator("#recs .result").nth(i).locator(".because").text_content()
                   for i in range(page.locator("#recs .result").count())]
        assert because and all(b.startswith(("because you liked Heat (1995)", f"because you liked {long}"))
                               for b in because)


def test_a_label_cut_never_splits_a_character_in_two(browser, tmp_path, serve_model_dir, serve_encoder):
    """The 60-character cut counts UTF-16 units: an emoji (two units) straddling it is dropped whole, never
    shown as half a character (a lone surrogate, drawn as a replacement box)."""
    text = "x" * 59 + "\N{GRINNING FACE}" + "y" * 10  # no space: cut at 60 units, between the emoji's halves
    docs = [(d[0], "", d[2], {}) for d in DOCS] + [("emoji", "", text, {})]
    index_dir = build_index(tmp_path / "ix", serve_model_dir, docs=docs, encoder=serve_encoder)
    with live_server(create_app(index_dir, encoder=serve_encoder)) as url:
        page = browser.new_page()
        page.goto(url + "/?liked=emoji")
        page.wait_for_selector("#recs .result")
        assert page.locator("#liked").text_content() == "x" * 59 + "…"

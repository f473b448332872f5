"""The history index over the outputs folders: what a user sees after days of generating."""
from __future__ import annotations

import os
from datetime import datetime

import pytest
from PIL import Image

from pipelines.core.errors import UserError
from pipelines.images.history import HistoryIndex, HistoryQuery
from pipelines.images.outputs import OutputSaver
from pipelines.params.infotext import build_infotext


def _save(saver, seed, prompt, model="sd15", sampler="Euler a", kind="txt2img-images", when=None, fmt=None):
    info = build_infotext(prompt, "blurry, lowres", {"Steps": 20, "Sampler": sampler, "CFG scale": 7, "Seed": seed,
                                                     "Size": "64x48", "Model": model})
    image = Image.new("RGB", (64, 48), (seed % 256, 90, 200))
    return saver.save(image, info, kind=kind, seed=seed, prompt=prompt, when=when)


@pytest.fixture()
def outputs(tmp_path):
    saver = OutputSaver(tmp_path / "outputs")
    day1, day2 = datetime(2026, 11, 30, 10), datetime(2026, 12, 2, 10)
    paths = [_save(saver, 11, "an astronaut riding a horse", when=day1),
             _save(saver, 22, "a castle in the clouds, oil painting", model="dreamshaper", sampler="DPM++ 2M", when=day1),
             _save(saver, 33, "portrait of a cat astronaut", model="dreamshaper", when=day2),
             _save(saver, 44, "a grid", kind="txt2img-grids", when=day2)]
    # mtimes in saving order, so "newest first" is well defined on coarse file systems
    for i, p in enumerate(paths):
        os.utime(p, (1_700_000_000 + i, 1_700_000_000 + i))
    return saver, paths, tmp_path / "state"


def test_lists_everything_newest_first_with_its_parameters(outputs):
    saver, paths, state = outputs
    index = HistoryIndex(saver.root, state)
    stats = index.refresh()
    assert stats.added == 4
    page = index.search(HistoryQuery())
    assert page.total == 4
    assert [item.seed for item in page.items] == [44, 33, 22, 11]
    cat = page.items[1]
    assert cat.prompt == "portrait of a cat astronaut" and cat.negative_prompt == "blurry, lowres"
    assert (cat.model, cat.sampler, cat.steps, cat.cfg, cat.width, cat.height) == ("dreamshaper", "Euler a", 20, 7.0, 64, 48)
    assert cat.day == "2026-12-02" and cat.kind == "txt2img-images"
    assert cat.path == paths[2].relative_to(saver.root).as_posix()


def test_search_by_text_model_sampler_seed_day_and_paging(outputs):
    saver, _, state = outputs
    index = HistoryIndex(saver.root, state)
    index.refresh()
    seeds = lambda **kw: [i.seed for i in index.search(HistoryQuery(**kw)).items]  # noqa: E731
    assert seeds(text="astronaut") == [33, 11]
    assert seeds(text="cat astronaut") == [33]           # every word must appear
    assert seeds(text='"unbalanced quote') == []          # user text is never FTS syntax
    assert seeds(text="lowres") == [44, 33, 22, 11]       # the negative prompt is searched too
    assert seeds(model="DREAM") == [33, 22]
    assert seeds(model="%") == []                        # LIKE wildcards are literal
    assert seeds(sampler="DPM++ 2M") == [22]
    assert seeds(seed=33) == [33]
    assert seeds(day_from="2026-12-01") == [44, 33]
    assert seeds(day_to="2026-11-30") == [22, 11]
    assert seeds(kind="txt2img-grids") == [44]
    page = index.search(HistoryQuery(offset=1, limit=2))
    assert page.total == 4 and [i.seed for i in page.items] == [33, 22]


def test_stays_current_with_the_disk_and_survives_a_restart(outputs):
    saver, paths, state = outputs
    index = HistoryIndex(saver.root, state)
    index.refresh()
    again = index.refresh()
    assert (again.folders_read, again.added, again.removed) == (0, 0, 0)   # nothing changed: nothing read
    paths[0].unlink()                                                     # deleted in a file manager
    new = _save(saver, 55, "a new image", when=datetime(2026, 12, 2, 11))
    os.utime(new, (1_800_000_000, 1_800_000_000))
    index.close()
    index = HistoryIndex(saver.root, state)                                # the app restarted
    stats = index.refresh()
    assert stats.added == 1 and stats.removed == 1
    assert [i.seed for i in index.search(HistoryQuery()).items] == [55, 44, 33, 22]
    import shutil

    shutil.rmtree(saver.root / "txt2img-grids")                            # a whole folder removed
    index.refresh()
    assert [i.seed for i in index.search(HistoryQuery()).items] == [55, 33, 22]


def test_delete_moves_to_trash_and_favourites_filter(outputs):
    saver, paths, state = outputs
    index = HistoryIndex(saver.root, state)
    index.refresh()
    rel = paths[1].relative_to(saver.root).as_posix()
    index.set_favourite(rel)
    assert [i.seed for i in index.search(HistoryQuery(favourites_only=True)).items] == [22]
    moved = index.delete(rel)
    assert not paths[1].exists() and moved.exists() and moved.is_relative_to(saver.root / ".trash")
    assert Image.open(moved).size == (64, 48)
    assert 22 not in [i.seed for i in index.search(HistoryQuery()).items]
    index.refresh()                                                         # the trash is not listed
    assert 22 not in [i.seed for i in index.search(HistoryQuery()).items]
    with pytest.raises(UserError):
        index.delete("../../etc/passwd")
    with pytest.raises(UserError):
        index.thumbnail(rel)                                                # no longer in the history


def test_thumbnails_are_made_once_and_small(outputs):
    saver, paths, state = outputs
    big = _save(saver, 66, "big", when=datetime(2026, 12, 3))
    Image.new("RGB", (1024, 512), "red").save(big)                         # replace with a large image
    index = HistoryIndex(saver.root, state)
    index.refresh()
    rel = big.relative_to(saver.root).as_posix()
    thumb = index.thumbnail(rel)
    with Image.open(thumb) as im:
        assert im.format == "WEBP" and max(im.size) == 256 and im.size == (256, 128)
    made = thumb.stat().st_mtime_ns
    assert index.thumbnail(rel) == thumb and thumb.stat().st_mtime_ns == made


def test_history_tab_pages_selects_favourites_and_deletes(outputs):
    from types import SimpleNamespace

    from webui.ui.history import HistoryTab

    saver, paths, state = outputs
    ctx = SimpleNamespace(args=SimpleNamespace(data_dir=str(state.parent)), services=SimpleNamespace(saver=saver),
                          exposed=False, paste_tabs=())
    tab = HistoryTab(ctx)
    thumbs, text, items, offset = tab.show_page("", "", "", None, "", "", False, 0)
    assert text == "1–4 of 4 image(s)" and len(thumbs) == 4 and thumbs[0][0].size == (64, 48)
    thumbs, text, items, _ = tab.show_page("", "", "", 22, "", "", False, 0)    # search by seed
    assert [i.seed for i in items] == [22]
    path, info, item, star = tab.select(items, SimpleNamespace(index=0))
    assert path == str(paths[1].resolve()) and "a castle in the clouds" in info and item.seed == 22
    *_, star = tab.toggle_favourite(item)
    assert star["value"] == "★ Favourite"
    _, _, favs, _ = tab.show_page("", "", "", None, "", "", True, 0)
    assert [i.seed for i in favs] == [22]
    tab.delete(favs[0])
    assert not paths[1].exists()
    _, text, _, _ = tab.show_page("", "", "", None, "", "", False, 0)
    assert text == "1–3 of 3 image(s)"
    ctx.exposed = True
    import gradio as gr

    with pytest.raises(gr.Error):
        tab.delete(items[0])

() => {
  // Run once when the page loads (Gradio's `js=`; webui/ui/blocks.py reads this file).
  if (window.__webuiPage) return;
  window.__webuiPage = true;
  const modes = ['txt2img', 'img2img'];
  const byId = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- light / dark, remembered per browser
  const THEME_KEY = 'webui-theme';
  const setTheme = (theme) => {
    document.body.classList.toggle('dark', theme === 'dark');
    try { localStorage.setItem(THEME_KEY, theme); } catch (err) { /* private mode: not remembered */ }
  };
  let stored = null;
  try { stored = localStorage.getItem(THEME_KEY); } catch (err) { stored = null; }
  if (stored === 'dark' || stored === 'light') setTheme(stored);
  window.webuiToggleTheme = () => setTheme(document.body.classList.contains('dark') ? 'light' : 'dark');

  // ---------------------------------------------------------------- ↙: parameters from the prompt or a PNG
  // A1111 reads an infotext pasted into the prompt box; its last line names the steps.
  window.webuiHasInfotext = (text) => /(^|\n)\s*Steps: *\d/.test(text || '');
  const fileInputOf = (button) => {
    if (!button) return null;
    const prev = button.previousElementSibling;   // Gradio renders an UploadButton's input just before it
    if (prev && prev.matches('input[type=file]')) return prev;
    return button.querySelector('input[type=file]') || button.parentElement.querySelector('input[type=file]');
  };
  window.webuiPickPasteImage = (mode) => {
    const input = fileInputOf(byId(mode + '_paste_image'));
    if (input) input.click();
  };

  // Tooltips (Gradio buttons have no title option).
  const TIPS = {
    _paste: 'Read generation parameters: from an infotext pasted into the prompt box, or (prompt without ' +
            'parameters) from a PNG you choose; dropping a PNG on the prompt does the same',
    _swap_size: 'Swap width and height',
    _random_seed: 'Random seed (-1)',
    _reuse_seed: 'Reuse the seed of the selected image',
    _open_folder: 'Open the output folder',
    _networks_refresh: 'Rescan the LoRA and embedding folders',
  };
  const GLOBAL_TIPS = {refresh_checkpoints: 'Rescan the checkpoint and VAE folders',
                       theme_toggle: 'Light / dark (remembered in this browser)'};
  const addTips = () => {
    for (const [id, tip] of Object.entries(GLOBAL_TIPS)) { const el = byId(id); if (el) el.title = tip; }
    for (const m of modes) {
      for (const [suffix, tip] of Object.entries(TIPS)) { const el = byId(m + suffix); if (el) el.title = tip; }
    }
  };
  addTips();
  new MutationObserver(addTips).observe(document.body, {childList: true, subtree: true});

  // ---------------------------------------------------------------- keys
  const visibleMode = () => modes.find((m) => { const tab = byId('tab_' + m); return tab && tab.offsetParent !== null; });
  document.addEventListener('keydown', (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === 'Enter') {
      const m = visibleMode();
      const btn = m && byId(m + '_generate');
      if (btn) { e.preventDefault(); btn.click(); }
      return;
    }
    if ((e.ctrlKey || e.metaKey) && (e.key === 'ArrowUp' || e.key === 'ArrowDown')) {
      const area = e.target;
      if (!area || area.tagName !== 'TEXTAREA' || !area.closest('[id$="_prompt"]')) return;
      if (editAttention(area, e.key === 'ArrowUp' ? 0.1 : -0.1)) e.preventDefault();
    }
  });

  // Ctrl+Up/Down (A1111): the selection, or the word at the cursor, gets its emphasis weight raised or
  // lowered by 0.1 as "(text:1.1)"; inside an existing "(text:w)" the weight changes; at 1.0 the
  // parentheses go. Written for this project (A1111's behaviour, not its code).
  const round = (w) => Math.round(w * 100) / 100;
  const enclosing = (text, start, end) => {   // [open, close] of the "( ... )" around the selection, or null
    if (text[start] === '(' && text[end - 1] === ')' && end - start > 1) return [start, end - 1];
    const open = text.lastIndexOf('(', start - 1);
    if (open < 0 || text.lastIndexOf(')', start - 1) > open) return null;
    const close = text.indexOf(')', end);
    const nextOpen = text.indexOf('(', end);
    if (close < 0 || (nextOpen >= 0 && nextOpen < close)) return null;
    return [open, close];
  };
  const replaceIn = (area, from, to, replacement, selStart, selLength) => {
    area.value = area.value.slice(0, from) + replacement + area.value.slice(to);
    area.setSelectionRange(selStart, selStart + selLength);
    area.dispatchEvent(new Event('input', {bubbles: true}));   // Gradio reads the new value from this event
    return true;
  };
  function editAttention(area, delta) {
    const text = area.value;
    let start = area.selectionStart, end = area.selectionEnd;
    const group = enclosing(text, start, end);
    const weighted = group && text.slice(group[0] + 1, group[1]).match(/^([\s\S]*):(-?\d+(?:\.\d+)?)$/);
    if (weighted) {   // inside "(text:w)": change w; at 1 the parentheses go
      const [open, close] = group;
      const body = weighted[1];
      const weight = round(parseFloat(weighted[2]) + delta);
      if (weight === 1) return replaceIn(area, open, close + 1, body, open, body.length);
      return replaceIn(area, open, close + 1, `(${body}:${weight})`, open + 1, body.length);
    }
    if (start === end) {   // no selection: the word at the cursor
      const isWord = (c) => c !== undefined && !/[\s,.()\[\]<>:|]/.test(c);
      while (start > 0 && isWord(text[start - 1])) start--;
      while (end < text.length && isWord(text[end])) end++;
    }
    while (start < end && text[start] === ' ') start++;
    while (end > start && text[end - 1] === ' ') end--;
    if (start === end) return false;
    const body = text.slice(start, end);
    return replaceIn(area, start, end, `(${body}:${round(1 + delta)})`, start + 1, body.length);
  }
  window.webuiEditAttention = editAttention;

  // ---------------------------------------------------------------- a PNG dropped on a prompt box
  // is handed to that tab's ↙ upload button, whose handler reads the image's parameters into the fields.
  const zone = (e) => {
    const box = e.target && e.target.closest && e.target.closest('[id$="_prompt"]');
    if (!box) return null;
    const mode = modes.find((m) => box.id === m + '_prompt' || box.id === m + '_negative_prompt');
    return mode ? {box, mode} : null;
  };
  const hasFile = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes('Files');
  document.addEventListener('dragover', (e) => {
    const z = zone(e);
    if (z && hasFile(e)) { e.preventDefault(); z.box.closest('.prompt-box')?.classList.add('drop-target'); }
  }, true);
  document.addEventListener('dragleave', (e) => {
    const z = zone(e);
    if (z) z.box.closest('.prompt-box')?.classList.remove('drop-target');
  }, true);
  document.addEventListener('drop', (e) => {
    const z = zone(e);
    if (!z || !hasFile(e)) return;
    const file = Array.from(e.dataTransfer.files).find((f) => f.type.startsWith('image/'));
    z.box.closest('.prompt-box')?.classList.remove('drop-target');
    if (!file) return;
    const input = fileInputOf(byId(z.mode + '_paste_image'));
    if (!input) return;
    e.preventDefault();
    e.stopPropagation();
    const dt = new DataTransfer();
    dt.items.add(file);
    input.files = dt.files;
    input.dispatchEvent(new Event('change', {bubbles: true}));
  }, true);
}

"""Keyboard shortcuts: a small script that clicks the page's own buttons, so a key press takes
exactly the path a mouse click takes (same event, same server checks)."""

from __future__ import annotations

import json

# element id -> keys (lower case `KeyboardEvent.key` values)
BUTTON_KEYS: dict[str, tuple[str, ...]] = {
    "btn-left": ("1", "a"),
    "btn-right": ("2", "b"),
    "btn-tie": ("3", "t"),
    "btn-both-bad": ("4", "n"),
    "btn-skip": ("5", "s"),
    "btn-undo": ("u",),  # shown for labeling.undo_seconds after a verdict
}
STRENGTH_KEYS: tuple[str, ...] = ("q", "w", "e")  # slight, clear, strong

LEGEND = (
    "**Keys:** `1`/`A` A better · `2`/`B` B better · `3`/`T` tie · `4`/`N` both bad (neither) · "
    "`5`/`S` skip · `U` undo the last verdict · `Q`/`W`/`E` strength slight/clear/strong · `Esc` leaves the reason box "
    "(keys are off while you type there)"
)

_SCRIPT = """
() => {
  if (window.__rlhfShortcuts) return;
  window.__rlhfShortcuts = true;
  const buttonKeys = __BUTTONS__;
  const strengthKeys = __STRENGTHS__;
  const byKey = {};
  for (const [id, keys] of Object.entries(buttonKeys)) for (const k of keys) byKey[k] = id;
  const textTypes = ["text", "search", "email", "password", "number", "url", "tel"];
  const isTyping = (el) => !!el && (el.isContentEditable ||
    ((el.tagName === "TEXTAREA" || (el.tagName === "INPUT" && textTypes.includes(el.type))) &&
     !el.readOnly && !el.disabled));
  const shown = (el) => !!el && !el.disabled && el.offsetParent !== null;
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (isTyping(ev.target)) {
      if (ev.key === "Escape") ev.target.blur();
      return;
    }
    if (ev.repeat) return;
    const key = (ev.key || "").toLowerCase();
    const id = byKey[key];
    if (id) {
      const button = document.getElementById(id);
      if (shown(button)) { ev.preventDefault(); button.click(); }
      return;
    }
    const level = strengthKeys.indexOf(key);
    if (level >= 0) {
      const radios = document.querySelectorAll("#strength input[type=radio]");
      if (radios[level] && shown(radios[level].closest("label") || radios[level])) {
        ev.preventDefault();
        radios[level].click();
      }
    }
  });
}
"""

SHORTCUTS_JS = _SCRIPT.replace("__BUTTONS__", json.dumps(BUTTON_KEYS)).replace(
    "__STRENGTHS__", json.dumps(list(STRENGTH_KEYS))
)

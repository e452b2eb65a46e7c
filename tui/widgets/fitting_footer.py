"""The key bar at the bottom: the app's footer keys in a fixed order, as many whole ones as fit."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Footer

from tui.bindings import APP_BINDINGS, FOOTER_KEYS

#: Where each footer key's action goes in the bar (the order of :data:`FOOTER_KEYS`).
_RANKS = {b.action: FOOTER_KEYS.index(b.id) for b in APP_BINDINGS if b.id in FOOTER_KEYS}


class FittingFooter(Footer):
    """Textual's footer lists the keys in the order the focused widget's own bindings happen
    to give, and scrolls sideways once they overflow: at 155 columns the last key showed cut
    in half against the palette key. This one puts them in :data:`FOOTER_KEYS` order and hides
    those past the last one that fits whole; the palette key (the way to every command)
    always shows."""

    def compose(self) -> ComposeResult:
        items = list(super().compose())
        palette = [item for item in items if item.has_class("-command-palette")]
        keys = [item for item in items if item not in palette]
        keys.sort(key=lambda item: _RANKS.get(getattr(item, "action", ""), len(_RANKS)))
        yield from keys
        yield from palette

    async def recompose(self) -> None:
        await super().recompose()
        self._fit()

    def on_resize(self, _event: events.Resize) -> None:
        self._fit()

    def _fit(self) -> None:
        if not self.size.width:
            return  # not laid out yet: the first resize fits it
        keys = [child for child in self.children if not child.has_class("-command-palette")]
        palette = [child for child in self.children if child.has_class("-command-palette")]
        room = self.size.width - sum(self._width_of(child) for child in palette)
        for child in keys:
            width = self._width_of(child)
            child.display = width <= room
            room = room - width if child.display else -1  # none after a key left out
        self.scroll_to(0, animate=False)

    def _width_of(self, widget: Widget) -> int:
        """The columns ``widget`` takes in the bar: its text, padding, border and margin (the
        same whether it is shown now or not)."""
        styles = widget.styles
        content = widget.get_content_width(self.size, self.app.size)
        return content + styles.gutter.width + styles.margin.width

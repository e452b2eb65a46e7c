"""What the keys and commands do to the panes: open, fork, send, stop, clear, edit, page
through versions, branch at a token, switch the model. Each action reads the pane and the
engine's answers it draws, and says what it asks of the engine with a typed command; the app
binds the keys to these."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from core.chat import (
    BranchAtToken,
    ChatConfig,
    ChatTree,
    ClearChat,
    CloseChat,
    EditMessage,
    ForkChat,
    Notice,
    NoticeKind,
    OpenChat,
    Regenerate,
    Restore,
    Role,
    SendTurn,
    ShowMessage,
    StopChat,
    SwitchModel,
)
from core.text.printable import printable
from tui.clipboard import copy_with_system_tool
from tui.notice_text import notice_text
from tui.screens.branch_screen import BranchScreen
from tui.screens.compare_screen import CompareScreen
from tui.screens.token_screen import TokenChoice, TokenScreen
from tui.session_store import SavedPane
from tui.widgets.chat_pane import ChatPane
from tui.widgets.pane_row import PaneModel

if TYPE_CHECKING:
    from tui.app import PanechatApp


class PaneActions:
    """The pane actions of one app (its keys, its palette, its tests call them)."""

    def __init__(self, app: PanechatApp) -> None:
        self.app = app

    async def add_pane(
        self,
        pane_config: ChatConfig,
        *,
        fork_of: ChatPane | None = None,
        saved: SavedPane | None = None,
    ) -> ChatPane | None:
        """Open a pane; with ``fork_of``, one that continues from that pane's current point
        and shares its history in the KV cache."""
        if len(self.app.panes) >= self.app.config.context.n_seq_max:
            self.app.notify(
                f"at most {self.app.config.context.n_seq_max} panes — raise n_seq_max in "
                "[context] of config.toml",
                severity="warning",
            )
            return None
        row = self.app.pane_row
        if saved is not None:
            tree = saved.chat_tree()
            pane = await row.open(
                pane_config,
                tree=tree,
                branched_from=saved.branched_from,
                model=self.model_of(pane_config),
            )
            self.app.recorder.pane_restored(pane.pane_id, saved)
            if saved.state_damaged:
                notice = Notice(NoticeKind.STATE_NOT_USED, "its record is damaged")
                await pane.add_notice(f"⚠ {notice_text(notice, self.app.keys)}")
            self.app.source.submit(OpenChat(pane.pane_id, pane_config, Restore(tree, saved.state)))
            return pane
        if fork_of is None:
            pane = await row.open(pane_config, model=self.model_of(pane_config))
            self.app.recorder.pane_opened(pane.pane_id, pane_config, pane.branched_from)
            self.app.source.submit(OpenChat(pane.pane_id, pane_config))
            return pane
        branch = fork_of.chat_tree.path()
        turns = sum(1 for message in branch if message.role is Role.USER)
        origin = f"{fork_of.config.name} after {turns} turn{'s' * (turns != 1)}"
        pane_config = replace(pane_config, model=fork_of.config.model)  # a branch stays on it
        pane = await row.open(
            pane_config,
            after=fork_of,
            tree=ChatTree.along(branch),
            branched_from=origin,
            model=self.model_of(pane_config),
        )
        self.app.recorder.pane_opened(pane.pane_id, pane_config, pane.branched_from)
        self.app.source.submit(ForkChat(fork_of.pane_id, pane.pane_id, pane_config))
        return pane

    def model_of(self, pane_config: ChatConfig) -> PaneModel:
        """How a pane shows its model: the name in its title, and that model's context size."""
        return PaneModel(
            self.model_label(pane_config.model), self.app.config.context_size(pane_config.model)
        )

    def model_label(self, model: str) -> str:
        """A model's name in titles, exports and the compare view; "" while every pane is on
        the one default model (nothing to tell apart)."""
        if not self.app.config.named_models():
            return ""
        key = self.app.config.model_key(model)
        return key or self.app.config.model_alias or self.app.model_name or "default"

    def switch_model(self, model: str) -> None:
        """The focused pane answers with ``model`` from now on: the chat is read again there."""
        pane = self.app.focused_pane()
        if pane is None:
            return
        if self.app.config.model_key(pane.config.model) == self.app.config.model_key(model):
            self.app.notify(f"{printable(pane.config.name)} already answers with that model")
            return
        tree = pane.chat_tree.copy()  # for a pane whose own model never loaded
        self.app.source.submit(SwitchModel(pane.pane_id, model, pane.config, tree))

    async def send_to(self, pane: ChatPane, text: str) -> None:
        if pane.editing is not None:
            await self._send_edit(pane, text)
            return
        await pane.show_sent(text)
        self.app.source.submit(SendTurn(pane.pane_id, text))

    async def _send_edit(self, pane: ChatPane, text: str) -> None:
        """A new version of a user message: the old one and the branch below it stay, as a
        sibling; the model goes on from the messages before it."""
        if pane.generating:
            self.app.notify(notice_text(Notice(NoticeKind.BUSY, "editing"), self.app.keys))
            pane.input.load_text(text)
            return
        assert pane.editing is not None
        self.app.source.submit(EditMessage(pane.pane_id, pane.editing, text))
        pane.cancel_edit()  # the engine's frame shows the new branch

    def focus_pane(self, step: int) -> None:
        current = self.app.focused_pane()
        if current is not None:
            self.app.pane_row.neighbour(current, step).input.focus()

    async def new_pane(self) -> None:
        pane = await self.add_pane(self.app.config.pane_at(self.app.pane_row.opened))
        if pane is not None:
            pane.input.focus()

    async def close_pane(self) -> None:
        pane = self.app.focused_pane()
        if pane is None:
            return
        if len(self.app.panes) == 1:
            quit_key = self.app.keys.key("app.quit")
            self.app.notify(f"the last pane stays open — quit with {quit_key}", severity="warning")
            return
        self.app.source.submit(CloseChat(pane.pane_id))
        self.app.recorder.pane_closed(pane.pane_id)
        self.app.frames.drop(pane.pane_id)
        self.focus_pane(1)
        await self.app.pane_row.close(pane)

    def stop(self) -> None:
        """Esc: stop the focused pane's reply, else drop an edit or the selection, else leave
        the maximized view."""
        pane = self.app.focused_pane()
        if pane is not None and pane.generating:
            self.app.source.submit(StopChat(pane.pane_id))
        elif pane is not None and pane.editing is not None:
            pane.cancel_edit()  # the old version stays; the input lets the new one go
            pane.input.clear()
        elif pane is not None and pane.selected is not None:
            pane.deselect()
        elif self.app.screen.maximized is not None:
            self.app.screen.minimize()

    def stop_all(self) -> None:
        for pane in self.app.panes:
            self.app.source.submit(StopChat(pane.pane_id))

    def broadcast(self) -> None:
        pane = self.app.focused_pane()
        if pane is not None:
            # Ctrl+B is the app's binding and runs at once, while the keys typed just before
            # it may still wait in the input's own queue: read the text after them.
            pane.input.call_later(self._broadcast_from, pane)

    async def _broadcast_from(self, pane: ChatPane) -> None:
        text = pane.input.text.strip()
        if not text:
            broadcast = self.app.keys.key("input.broadcast")
            self.app.notify(f"type a message first, then broadcast it with {broadcast}")
            return
        pane.input.clear()
        panes = [p for p in self.app.panes if p.in_broadcast_set] or self.app.panes
        for target in panes:
            await target.show_sent(text)
        self.app.source.submit(*(SendTurn(target.pane_id, text) for target in panes))

    def toggle_maximize(self) -> None:
        pane = self.app.focused_pane()
        if self.app.screen.maximized is not None:
            self.app.screen.minimize()
        elif pane is not None:
            self.app.screen.maximize(pane)

    async def clear_pane(self) -> None:
        pane = self.app.focused_pane()
        if pane is not None:
            self.app.source.submit(ClearChat(pane.pane_id))  # its frame clears the saved chat
            self.app.frames.drop(pane.pane_id)
            await pane.clear_transcript()

    def copy_reply(self) -> None:
        pane = self.app.focused_pane()
        if pane is None or not pane.last_reply:
            self.app.notify("no reply to copy yet")
            return
        # Always send OSC 52 too: over SSH the local terminal's clipboard is the one wanted.
        self.app.copy_to_clipboard(pane.last_reply)
        how = "system clipboard" if copy_with_system_tool(pane.last_reply) else "OSC 52"
        self.app.notify(f"copied the last reply ({how})")

    def toggle_broadcast_set(self) -> None:
        pane = self.app.focused_pane()
        if pane is None:
            return
        chosen = pane.toggle_broadcast_set()
        count = sum(p.in_broadcast_set for p in self.app.panes)
        target = f"the {count} chosen panes" if count else "every pane"
        self.app.notify(
            f"{pane.config.name} {'joins' if chosen else 'leaves'}; "
            f"{self.app.keys.key('input.broadcast')} sends to {target}"
        )

    def compare(self) -> None:
        replies = [pane.reply_summary() for pane in self.app.panes]
        if not any(r.text for r in replies):
            broadcast = self.app.keys.key("input.broadcast")
            self.app.notify(f"no replies to compare yet — broadcast a question with {broadcast}")
            return
        self.app.push_screen(CompareScreen(replies))

    async def fork_pane(self, greedy: bool = False) -> None:
        """Branch the focused pane into a new one (after its reply in flight, if any),
        optionally sampling greedily instead of with the pane's settings."""
        source = self.app.focused_pane()
        if source is None:
            return
        config = replace(source.config, name=f"{source.config.name} ⑂")
        if greedy:
            config = replace(config, sampling=replace(config.sampling, temperature=0.0))
        pane = await self.add_pane(config, fork_of=source)
        if pane is not None:
            pane.input.focus()
            if source.generating:
                self.app.notify("the branch starts when the current reply is complete")

    def _idle_focused_pane(self, doing: str) -> ChatPane | None:
        """The focused pane, unless a reply is still streaming into it (then say so)."""
        pane = self.app.focused_pane()
        if pane is not None and pane.generating:
            self.app.notify(notice_text(Notice(NoticeKind.BUSY, doing), self.app.keys))
            return None
        return pane

    def _still_idle(self, pane: ChatPane, doing: str) -> bool:
        """A screen's choice for ``pane`` applies only if the pane is still there and no
        reply began meanwhile (then say so)."""
        if not pane.is_attached:
            return False
        if pane.generating:
            self.app.notify(notice_text(Notice(NoticeKind.BUSY, doing), self.app.keys))
            return False
        return True

    def regenerate(self) -> None:
        if (pane := self._idle_focused_pane("regenerating")) is not None:
            self.app.source.submit(Regenerate(pane.pane_id))

    def select_message(self, step: int) -> None:
        """Alt+Up / Alt+Down: choose the message the edit and version keys act on."""
        pane = self.app.focused_pane()
        if pane is not None and not pane.select(step) and not pane.messages():
            self.app.notify("no messages in this pane yet")

    def edit_message(self) -> None:
        """Load the selected user message (else the last) into the input: Enter sends the
        new version as a sibling branch, Esc keeps the old one."""
        pane = self._idle_focused_pane("editing")
        if pane is not None and not pane.start_edit():
            self.app.notify("no message of yours to edit in this pane yet")

    async def page_branch(self, step: int) -> None:
        """Alt+Left / Alt+Right: the previous or next version of the selected message (else
        of the last reply), with its branch: the model goes on from there."""
        pane = self._idle_focused_pane("switching the branch")
        if pane is None:
            return
        sibling = pane.version(step)
        if sibling is None:
            which = "of the selected message" if pane.selected is not None else "of the last reply"
            keys = self.app.keys
            edit, regenerate = keys.key("message.edit"), keys.key("pane.regenerate")
            self.app.notify(
                f"no {'earlier' if step < 0 else 'later'} version {which} — {edit} edits a "
                f"message, {regenerate} regenerates the last reply"
            )
            return
        self.app.source.submit(ShowMessage(pane.pane_id, sibling))

    def show(self, pane: ChatPane, message_id: int) -> None:
        """Select a message and scroll to it; on another branch, the engine shows that branch
        (the model reads it: what its KV shares with it stays) and the pane draws it."""
        if not pane.reveal(message_id):
            self.app.source.submit(ShowMessage(pane.pane_id, message_id))

    def branches(self) -> None:
        """The focused pane's branches as a tree: choosing a message shows its branch. Again:
        close the tree."""
        if isinstance(self.app.screen, BranchScreen):
            self.app.screen.dismiss(None)
            return
        pane = self._idle_focused_pane("switching the branch")
        if pane is None:
            return
        if not len(pane.chat_tree):
            self.app.notify("no messages in this pane yet")
            return

        async def chosen(message_id: int | None) -> None:
            if message_id is None or not self._still_idle(pane, "switching the branch"):
                return
            self.show(pane, message_id)

        self.app.push_screen(BranchScreen(pane.config.name, pane.chat_tree), chosen)

    def tokens(self) -> None:
        """The selected reply (else the last) token by token, shaded by probability: choose
        another token the model weighed to branch there. Again: close the view."""
        if isinstance(self.app.screen, TokenScreen):
            self.app.screen.dismiss(None)
            return
        pane = self._idle_focused_pane("branching at a token")
        if pane is None:
            return
        reply = pane.reply_for_tokens()
        if reply is None or not reply.tokens or reply.parent is None:
            self.app.notify(
                "no token odds for this reply — replies written by this version of panechat "
                "keep them; select one with "
                f"{self.app.keys.key('message.previous')}"
            )
            return

        def chosen(choice: TokenChoice | None) -> None:
            if choice is None or not self._still_idle(pane, "branching"):
                return
            token = choice.alternative.token
            self.app.source.submit(BranchAtToken(pane.pane_id, reply.id, choice.index, token))

        # A reply another model wrote is shown as that model weighed it; branching there is
        # checked against the pane's model, token by token, by the decode loop.
        written_by = None
        config = self.app.config
        if reply.model is not None and config.model_key(reply.model) != config.model_key(
            pane.config.model
        ):
            written_by = self.model_label(reply.model) or reply.model
        self.app.push_screen(TokenScreen(pane.config.name, reply.tokens, written_by), chosen)

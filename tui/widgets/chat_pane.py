"""One chat pane: title bar, streaming transcript, and its own input."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message

from core import StopReason
from core.chat import ChatConfig, ChatDelta, ChatTree, Role, TreeChange, TreeMessage
from core.text.reasoning import Split, split_reply
from tui.bindings import KeyNames
from tui.export import PaneTranscript
from tui.notice_text import notice_text
from tui.screens.compare_screen import ReplySummary
from tui.widgets.chat_message import ChatMessage
from tui.widgets.pane_title import PaneTitle
from tui.widgets.prompt_input import PromptInput
from tui.widgets.reasoning_block import ReasoningBlock


class Transcript(VerticalScroll):
    """The pane's messages. Tab still reaches it (to scroll with the keys), but a click does
    not take the focus from the input: typing after a click must land in the input."""

    def focus_on_click(self) -> bool:
        return False


class ChatPane(Vertical):
    """A pane shows one conversation. It never talks to the model: it posts
    :class:`ChatPane.Sent` and renders the :class:`ChatDelta` the decode loop sends back."""

    ALLOW_MAXIMIZE = True
    #: While a reply streams, the title's tok/s and context figures change every frame.
    #: Redrawing eight titles on every screen update took ~10% of the UI's time, so while
    #: streaming they are refreshed at most this often (and at once when a reply starts or ends).
    TITLE_INTERVAL = 1.0

    class Sent(Message):
        def __init__(self, pane: ChatPane, text: str) -> None:
            super().__init__()
            self.pane = pane
            self.text = text

    def __init__(
        self,
        pane_id: str,
        config: ChatConfig,
        context_size: int,
        keys: KeyNames | None = None,
        model_label: str = "",
    ) -> None:
        super().__init__(id=pane_id, classes="chat-pane")
        self.pane_id = pane_id
        self.keys = keys or KeyNames({})  # the keys its notices name
        self.config = config
        self.context_size = context_size
        self.model_label = model_label  # the model's name in titles and exports
        # The engine's answers, as its frames give them: the chat's tree (changed only by the
        # engine's tree changes, see follow()) and whether it is busy. The pane draws them.
        self.chat_tree = ChatTree()
        self.generating = False
        self.selected: int | None = None  # the message the branch and edit keys act on
        self.editing: int | None = None  # the user message the input holds a new version of
        self._shown: dict[int, ChatMessage] = {}  # the path's messages on screen, by id
        self._pending: list[ChatMessage] = []  # turns sent, not in the engine's tree yet
        # Notices by the message they followed (None: before the first), drawn again with it.
        self._notices: dict[int | None, list[str]] = {}
        self._streaming: int | None = None  # the reply streaming into its widget, by id
        self._streamed = Split()  # how much of it the widget (and its thoughts) show
        self.finished_replies = 0
        self.branched_from = ""  # "name after N turns" when this pane is a fork
        self.in_broadcast_set = False  # ctrl+b sends to the chosen panes when any is chosen
        self.last_reply_tokens = 0
        self.last_reply_rate = 0.0
        self.last_stop: StopReason | None = None
        self._title_at = 0.0  # when the title's figures were last refreshed
        # Kept, not queried: every streamed frame touches them, and a DOM query walks the tree.
        self.title_bar = PaneTitle()
        self.transcript = Transcript(classes="transcript")
        self.input = PromptInput()

    def compose(self) -> ComposeResult:
        title = self.title_bar
        title.pane_name = self.config.name
        title.model = self.model_label
        title.sampler = self.config.sampling.summary()
        title.context_size = self.context_size
        title.origin = self.branched_from
        yield title
        with self.transcript:
            if self.config.system.strip():
                yield self._system_notice()
        yield self.input

    def on_mount(self) -> None:
        # Follow new text, unless the user scrolls up (Textual releases the anchor then).
        self.transcript.anchor()

    def on_mouse_down(self, _event: events.MouseDown) -> None:
        """A press anywhere in the pane (its title, transcript, status) makes it the one typed
        into. The event goes on: a link, a fold or a text selection still gets it."""
        if not self.input.has_focus:
            self.input.focus(scroll_visible=False)

    def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        event.stop()
        self.send(event.text)

    def send(self, text: str) -> None:
        self.post_message(self.Sent(self, text))

    async def show_sent(self, text: str) -> None:
        """A turn the user sent, drawn at once; it joins the tree when the engine's frame
        puts it there (the engine adds it as its reply starts)."""
        message = ChatMessage("user", text)
        self._pending.append(message)
        await self.transcript.mount(message)

    async def add_notice(self, text: str) -> None:
        """A notice after the path's last message. It stays with that message: a branch
        switched away from and back shows it again (notices are not saved with a session)."""
        self._notices.setdefault(self.chat_tree.head, []).append(text)
        await self.transcript.mount(ChatMessage.for_notice(text))

    def messages(self, *, reasoning: bool = False) -> list[tuple[str, str]]:
        """The branch shown as (role, text) pairs, user turns and replies; with
        ``reasoning``, a reply's reasoning too, between its markers."""
        return self.branch_messages(self.chat_tree.head, reasoning=reasoning)

    def branch_messages(
        self, leaf: int | None, *, reasoning: bool = False
    ) -> list[tuple[str, str]]:
        """The messages from the first to ``leaf``, as :meth:`messages` gives them."""
        return [
            (role, text if reasoning or role != "assistant" else split_reply(text).answer)
            for role, text in self.chat_tree.messages(leaf)
        ]

    @property
    def last_reply(self) -> str:
        """The branch's last finished reply (its answer), for copy and compare."""
        for node in reversed(self.chat_tree.path()):
            if node.role is Role.ASSISTANT and node.id != self._streaming:
                return split_reply(node.text).answer.strip()
        return ""

    def messages_text(self) -> list[str]:
        """Every message's text on screen, notices included."""
        return [m.text for m in self.transcript.query(ChatMessage)]

    async def follow(self, changes: Sequence[TreeChange]) -> None:
        """The engine's tree changed: follow it, and draw what changed. A path that only
        grew gets the new messages added; any other change draws the path again."""
        tree = self.chat_tree
        if all(
            not c.reset and c.head == tree.head and all(m.id in tree for m in c.messages)
            for c in changes
        ):  # most frames: the text of the reply streaming, which its widget has already
            for change in changes:
                tree.apply(change)
            for message in (m for c in changes for m in c.messages):
                widget = self._shown.get(message.id)
                if message.id != self._streaming and widget is not None:
                    await widget.show_text(self._text(tree[message.id]))
            return
        before = [node.id for node in self.chat_tree.path()]
        changed: set[int] = set()
        reset = False
        for change in changes:
            self.chat_tree.apply(change)
            reset = reset or change.reset
            changed.update(message.id for message in change.messages)
        after = [node.id for node in self.chat_tree.path()]
        if reset or after[: len(before)] != before:
            for message_id in after:  # turns the engine took are drawn from the tree now
                node, pending = tree[message_id], self._pending
                taken = node.role is Role.USER and message_id not in before
                if taken and pending and pending[0].text == node.text:
                    pending.pop(0)
            await self.show_branch()
            return
        for message_id in before:
            widget = self._shown.get(message_id)
            if message_id in changed and message_id != self._streaming and widget is not None:
                await widget.show_text(self._text(self.chat_tree[message_id]))
        for message_id in after[len(before) :]:
            await self._add(self.chat_tree[message_id])

    async def _add(self, node: TreeMessage) -> None:
        """A new message at the end of the path shown: a pending turn's widget is adopted,
        else one is mounted (before the turns still pending)."""
        if node.role is Role.USER and self._pending and self._pending[0].text == node.text:
            message = self._pending.pop(0)
            message.message_id = node.id
            self._shown[node.id] = message
            return
        widget = self._widget(node)
        if self._pending:
            await self.transcript.mount(widget, before=self._pending[0])
        else:
            await self.transcript.mount(widget)

    async def show_branch(self) -> None:
        """Draw the tree's path: the system prompt, then each message with the notices that
        followed it, a saved reply's reasoning in its folded block; then turns still pending."""
        await self.transcript.remove_children()
        self._shown = {}
        widgets: list[ChatMessage | ReasoningBlock] = []

        def notices_after(message_id: int | None) -> None:
            for text in self._notices.get(message_id, ()):
                widgets.append(ChatMessage.for_notice(text))

        if self.config.system.strip():
            widgets.append(self._system_notice())
        notices_after(None)
        for node in self.chat_tree.path():
            message = self._widget(node)
            if node.role is Role.ASSISTANT and node.id != self._streaming:
                split = split_reply(node.text)
                if split.reasoning and self.config.show_reasoning:
                    message.thoughts = ReasoningBlock(split.reasoning, settled=True)
                    widgets.append(message.thoughts)
            widgets.append(message)
            notices_after(node.id)
        self._pending = [ChatMessage("user", m.text) for m in self._pending]
        widgets.extend(self._pending)
        await self.transcript.mount_all(widgets)
        if self.selected is not None and self.selected in self._shown:
            self._shown[self.selected].add_class("-selected")
            self._shown[self.selected].scroll_visible()
        else:
            self.selected = None
        if self.editing is not None and self.editing not in self._shown:
            self.editing = None

    def _system_notice(self) -> ChatMessage:
        return ChatMessage.for_notice(f"_{self.config.system.strip()}_")

    def _text(self, node: TreeMessage) -> str:
        """What a message's widget shows: a reply's answer (its reasoning has a block)."""
        text = split_reply(node.text).answer if node.role is Role.ASSISTANT else node.text
        if node.role is Role.ASSISTANT and not text.strip() and node.id != self._streaming:
            text = "_(no reply)_"
        return text

    def _widget(self, node: TreeMessage) -> ChatMessage:
        """A message's widget; the reply streaming starts empty, and apply() fills it."""
        streaming = node.id == self._streaming
        if streaming:
            self._streamed = Split()
        message = ChatMessage(
            node.role.value,
            "" if streaming else self._text(node),
            message_id=node.id,
            siblings=self.chat_tree.siblings(node.id),
        )
        self._shown[node.id] = message
        return message

    # -- branches ---------------------------------------------------------------------------

    def select(self, step: int) -> bool:
        """Move the selection ``step`` messages up (negative) or down the branch shown; from
        no selection, up starts at the last message. False past either end."""
        ids = [node.id for node in self.chat_tree.path()]
        if not ids:
            return False
        if self.selected is None:
            if step > 0:
                return False
            index = len(ids) + step
        else:
            index = ids.index(self.selected) + step
        if not 0 <= index < len(ids):
            return False
        self._mark(ids[index])
        return True

    def _mark(self, message_id: int | None) -> None:
        if self.selected in self._shown:
            self._shown[self.selected].remove_class("-selected")
        self.selected = message_id
        if message_id is not None:
            widget = self._shown[message_id]
            widget.add_class("-selected")
            widget.scroll_visible()

    def deselect(self) -> bool:
        """Drop the selection (and an edit in progress); False when there was none."""
        had = self.selected is not None or self.editing is not None
        self.cancel_edit()
        self._mark(None)
        return had

    def _target(self, role: Role | None = None) -> TreeMessage | None:
        """The selected message, else the branch's last one (of ``role``, when given)."""
        if self.selected is not None:
            node = self.chat_tree[self.selected]
            if role is None or node.role is role:
                return node
            if role is Role.USER and node.parent is not None:
                return self.chat_tree[node.parent]  # a reply: the turn it answers
            return None
        return next(
            (n for n in reversed(self.chat_tree.path()) if role is None or n.role is role), None
        )

    def version(self, step: int) -> int | None:
        """The previous (step < 0) or next version of the selected message (else of the last
        reply), for the engine to show with the branch below it (it stays selected); None
        when there is none, or a reply is streaming."""
        node = self._target(None if self.selected is not None else Role.ASSISTANT)
        if node is None or self._streaming is not None:
            return None
        sibling = self.chat_tree.sibling(node.id, step)
        if sibling is not None and self.selected is not None:
            self.selected = sibling  # marked when the branch through it is drawn
        return sibling

    def reveal(self, message_id: int) -> bool:
        """Select ``message_id`` and scroll to it; False when it is not on the branch shown
        (the engine is then asked to show it: it is marked when that branch is drawn)."""
        if message_id not in self._shown:
            self.selected = message_id if message_id in self.chat_tree else None
            return False
        self._mark(message_id)
        return True

    def reply_for_tokens(self) -> TreeMessage | None:
        """The reply the token view shows: the selected one (a selected turn: its reply on
        the branch shown), else the branch's last one (not one still streaming)."""
        node = self._target(None if self.selected is not None else Role.ASSISTANT)
        if node is not None and node.role is Role.USER:
            path = self.chat_tree.path()
            index = path.index(node) + 1
            node = path[index] if index < len(path) else None
        if node is None or node.role is not Role.ASSISTANT or node.id == self._streaming:
            return None
        return node

    def start_edit(self) -> bool:
        """Load the selected user message (else the last) into the input, to send a new
        version of it (the app sends it to the engine as an edit); False when there is none."""
        node = self._target(Role.USER)
        if node is None:
            return False
        self.cancel_edit()
        self.editing = node.id
        self._shown[node.id].show_editing(True)
        self.input.load_text(node.text)
        self.input.move_cursor(self.input.document.end)  # typing goes on where it ends
        self.input.focus()
        return True

    def cancel_edit(self) -> bool:
        if self.editing is None:
            return False
        if self.editing in self._shown:
            self._shown[self.editing].show_editing(False)
        self.editing = None
        return True

    def transcript_for_export(self, *, reasoning: bool = False) -> PaneTranscript:
        return PaneTranscript(
            self.config.name,
            self.config.sampling.summary(),
            self.config.system,
            self.messages(reasoning=reasoning),
            self.branched_from,
            self.model_label,
        )

    def branch_transcripts(self) -> list[PaneTranscript]:
        """Every branch of the chat as a transcript, with its reasoning, oldest first; the
        one shown is named so in its settings line."""
        return [
            replace(
                self.transcript_for_export(reasoning=True),
                messages=self.branch_messages(leaf.id, reasoning=True),
                branched_from="the branch shown" if leaf.id == self.chat_tree.head else "",
            )
            for leaf in self.chat_tree.leaves()
        ]

    def reply_summary(self) -> ReplySummary:
        """The last reply and its figures, for the compare screen."""
        return ReplySummary(
            self.config.name,
            self.config.sampling.summary(),
            self.last_reply,
            self.last_reply_tokens,
            self.last_reply_rate,
            self.last_stop,
            self.model_label,
        )

    def answer_with(self, model: str, label: str, context_size: int) -> None:
        """The chat now answers with ``model`` (its title, exports and saved config say so)."""
        self.config = replace(self.config, model=model)
        self.model_label, self.context_size = label, context_size
        self.title_bar.model, self.title_bar.context_size = label, context_size

    def toggle_broadcast_set(self) -> bool:
        self.in_broadcast_set = not self.in_broadcast_set
        self.title_bar.chosen = self.in_broadcast_set
        return self.in_broadcast_set

    async def _stream(self, reply: ChatMessage, split: Split) -> None:
        """Draw what the tree's text of the reply streaming has gained since the last frame:
        its thoughts into their block, its answer into its widget."""
        shown = self._streamed
        self._streamed = split
        if not (
            split.reasoning.startswith(shown.reasoning) and split.answer.startswith(shown.answer)
        ):
            await reply.show_text(split.answer)  # written over (rare): drawn again
            return
        thoughts = split.reasoning[len(shown.reasoning) :]
        answer = split.answer[len(shown.answer) :]
        if thoughts and self.config.show_reasoning:
            await self._think(reply, thoughts)
        if answer:
            if reply.thoughts is not None and answer.strip():
                reply.thoughts.settle()  # the answer begins: fold the thoughts away
            await reply.stream(answer)

    async def _think(self, reply: ChatMessage, text: str) -> None:
        """Stream reasoning into the reply's block (mounted above it when the first comes)."""
        if reply.thoughts is None:
            if not text.strip():
                return
            reply.thoughts = ReasoningBlock()
            await self.transcript.mount(reply.thoughts, before=reply)
        reply.thoughts.stream(text)

    async def clear_transcript(self) -> None:
        """Empty the pane at once, for a clear (the engine's empty tree follows)."""
        self.chat_tree = ChatTree()
        self.selected = self.editing = self._streaming = None
        self._shown, self._pending, self._notices = {}, [], {}
        await self.transcript.remove_children()

    async def apply(self, delta: ChatDelta) -> None:
        """Render one frame's worth of change (ignored while the pane is being removed or is
        not composed yet: a frame may still be in flight for it)."""
        if not self.is_mounted or self._closing or not self.title_bar.is_attached:
            return
        self.generating = delta.generating
        if delta.started:
            self._streaming = delta.message_id
        if delta.tree_changes:
            await self.follow(delta.tree_changes)
        reply = self._shown.get(self._streaming) if self._streaming is not None else None
        node = self.chat_tree.get(self._streaming)
        if reply is not None and node is not None:
            await self._stream(reply, split_reply(node.text))
        if delta.finished is not None:
            finished, self._streaming = self._streaming, None
            self.last_reply_tokens = delta.reply_tokens
            self.last_reply_rate = delta.tokens_per_second
            self.last_stop = delta.finished
            self.finished_replies += 1
            if reply is not None and finished is not None:
                if reply.thoughts is not None:
                    reply.thoughts.settle()
                node = self.chat_tree.get(finished)
                kept = node is not None and node.stop is not None  # else: a checkpoint
                await reply.finish(split_reply(node.text).answer if kept and node else None)
        if delta.notice is not None:
            await self.add_notice(f"⚠ {notice_text(delta.notice, self.keys)}")
        title, now = self.title_bar, time.monotonic()
        if (
            title.generating != delta.generating
            or not delta.generating
            or now - self._title_at >= self.TITLE_INTERVAL
        ):
            self._title_at = now
            title.generating = delta.generating
            title.tokens_per_second = delta.tokens_per_second
            title.context_used = delta.context_used

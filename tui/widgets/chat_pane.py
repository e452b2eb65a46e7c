"""One chat pane: title bar, streaming transcript, and its own input."""

from __future__ import annotations

import time
from dataclasses import replace

from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message

from core import StopReason
from core.chat import ChatConfig, ChatDelta, ChatTree, Role, TreeMessage
from core.text.reasoning import ReasoningMarkers, split_reply
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
        self.generating = False
        self.branches = ChatTree()  # every branch of the chat; the transcript shows one path
        self.selected: int | None = None  # the message the branch and edit keys act on
        self.editing: int | None = None  # the user message the input holds a new version of
        self._shown: dict[int, ChatMessage] = {}  # the path's messages on screen, by id
        # Notices by the message they followed (None: before the first), drawn again with it.
        self._notices: dict[int | None, list[str]] = {}
        self._reply: ChatMessage | None = None
        self._reply_node: TreeMessage | None = None  # the reply streaming into the tree
        self._reply_answer = ""
        self._reply_reasoning = ""
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

    async def add_user_message(self, text: str) -> TreeMessage:
        """A turn the user sent, after the path's last message; returns it (to be saved)."""
        node = self.branches.add(self.branches.head, Role.USER, text)
        await self.transcript.mount(self._widget(node))
        return node

    async def add_edited_message(self, text: str) -> TreeMessage:
        """A new version of the user message being edited, as its sibling: the transcript
        shows the new branch, which ends with it; returns it (to be saved)."""
        assert self.editing is not None
        node = self.branches.add(self.branches[self.editing].parent, Role.USER, text)
        self.editing = None
        await self.show_branch()
        return node

    async def add_notice(self, text: str) -> None:
        """A notice after the path's last message. It stays with that message: a branch
        switched away from and back shows it again (notices are not saved with a session)."""
        self._notices.setdefault(self.branches.head, []).append(text)
        await self.transcript.mount(ChatMessage.for_notice(text))

    def messages(self, *, reasoning: bool = False) -> list[tuple[str, str]]:
        """The branch shown as (role, text) pairs, user turns and replies; with
        ``reasoning``, a reply's reasoning too, between its markers."""
        return self.branch_messages(self.branches.head, reasoning=reasoning)

    def branch_messages(
        self, leaf: int | None, *, reasoning: bool = False
    ) -> list[tuple[str, str]]:
        """The messages from the first to ``leaf``, as :meth:`messages` gives them."""
        return [
            (role, text if reasoning or role != "assistant" else split_reply(text).answer)
            for role, text in self.branches.messages(leaf)
        ]

    def history_before(self, message_id: int) -> list[tuple[str, str]]:
        """What the model reads before a message: the messages it follows (reasoning kept,
        as the engine's own history keeps it)."""
        parent = self.branches[message_id].parent
        return [] if parent is None else self.branch_messages(parent, reasoning=True)

    @property
    def last_reply(self) -> str:
        """The branch's last finished reply (its answer), for copy and compare."""
        for node in reversed(self.branches.path()):
            if node.role is Role.ASSISTANT and node is not self._reply_node:
                return split_reply(node.text).answer.strip()
        return ""

    def messages_text(self) -> list[str]:
        """Every message's text on screen, notices included."""
        return [m.text for m in self.transcript.query(ChatMessage)]

    async def add_messages(self, messages: list[tuple[str, str]]) -> None:
        """Show a transcript copied from another pane (a fork): a branch of its own."""
        await self.load_tree(ChatTree.linear(messages))

    async def load_tree(self, tree: ChatTree) -> None:
        """Show a saved chat (every branch of it, the path it showed on screen)."""
        self.branches = tree
        self._notices = {}
        await self.show_branch()

    async def show_branch(self) -> None:
        """Draw the tree's path: the system prompt, then each message with the notices that
        followed it, a saved reply's reasoning in its folded block."""
        await self.transcript.remove_children()
        self._shown = {}
        self._reply = None
        widgets: list[ChatMessage | ReasoningBlock] = []

        def notices_after(message_id: int | None) -> None:
            for text in self._notices.get(message_id, ()):
                widgets.append(ChatMessage.for_notice(text))

        if self.config.system.strip():
            widgets.append(self._system_notice())
        notices_after(None)
        for node in self.branches.path():
            message = self._widget(node)
            if node.role is Role.ASSISTANT:
                split = split_reply(node.text)
                if split.reasoning and self.config.show_reasoning:
                    message.thoughts = ReasoningBlock(split.reasoning, settled=True)
                    widgets.append(message.thoughts)
            widgets.append(message)
            notices_after(node.id)
        await self.transcript.mount_all(widgets)
        if self.selected is not None and self.selected in self._shown:
            self._shown[self.selected].add_class("-selected")
        else:
            self.selected = None

    def _system_notice(self) -> ChatMessage:
        return ChatMessage.for_notice(f"_{self.config.system.strip()}_")

    def _widget(self, node: TreeMessage) -> ChatMessage:
        text = split_reply(node.text).answer if node.role is Role.ASSISTANT else node.text
        if node.role is Role.ASSISTANT and not text.strip() and node is not self._reply_node:
            text = "_(no reply)_"
        message = ChatMessage(
            node.role.value, text, message_id=node.id, siblings=self.branches.siblings(node.id)
        )
        self._shown[node.id] = message
        return message

    # -- branches ---------------------------------------------------------------------------

    def select(self, step: int) -> bool:
        """Move the selection ``step`` messages up (negative) or down the branch shown; from
        no selection, up starts at the last message. False past either end."""
        ids = [node.id for node in self.branches.path()]
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
            node = self.branches[self.selected]
            if role is None or node.role is role:
                return node
            if role is Role.USER and node.parent is not None:
                return self.branches[node.parent]  # a reply: the turn it answers
            return None
        return next(
            (n for n in reversed(self.branches.path()) if role is None or n.role is role), None
        )

    async def page(self, step: int) -> bool:
        """Show the previous (step < 0) or next version of the selected message (else the
        last reply), with the branch that goes on below it; False when there is none."""
        node = self._target(None if self.selected is not None else Role.ASSISTANT)
        if node is None or self._reply is not None:
            return False
        sibling = self.branches.sibling(node.id, step)
        if sibling is None:
            return False
        self.branches.show(sibling)
        if self.selected is not None:
            self.selected = sibling
        await self.show_branch()
        if self.selected is not None:
            self._shown[self.selected].scroll_visible()
        return True

    async def show_message(self, message_id: int) -> bool:
        """Show the branch through ``message_id``, selected and scrolled to (the tree
        screen's choice, a search hit); False when the pane has no such message."""
        try:
            self.branches.show(message_id)
        except KeyError:
            return False
        self.selected = message_id
        await self.show_branch()
        self._shown[message_id].scroll_visible()
        return True

    def reply_for_tokens(self) -> TreeMessage | None:
        """The reply the token view shows: the selected one (a selected turn: its reply on
        the branch shown), else the branch's last one (not one still streaming)."""
        node = self._target(None if self.selected is not None else Role.ASSISTANT)
        if node is not None and node.role is Role.USER:
            path = self.branches.path()
            index = path.index(node) + 1
            node = path[index] if index < len(path) else None
        if node is None or node.role is not Role.ASSISTANT or node is self._reply_node:
            return None
        return node

    async def branch_before(self, reply_id: int) -> list[tuple[str, str]]:
        """Show the branch up to the turn a reply answers, for a new version of that reply to
        follow; returns what the model reads before it (the turn included)."""
        parent = self.branches[reply_id].parent
        assert parent is not None
        self.branches.cut_at(parent)
        self.selected = None
        await self.show_branch()
        return self.branch_messages(parent, reasoning=True)

    def start_edit(self) -> bool:
        """Load the selected user message (else the last) into the input, to send a new
        version of it; False when the branch has none."""
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
                branched_from="the branch shown" if leaf.id == self.branches.head else "",
            )
            for leaf in self.branches.leaves()
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

    async def _think(self, reply: ChatMessage, text: str) -> None:
        """Stream reasoning into the reply's block (mounted above it when the first comes)."""
        if reply.thoughts is None:
            if not text.strip():
                return
            reply.thoughts = ReasoningBlock()
            await self.transcript.mount(reply.thoughts, before=reply)
        reply.thoughts.stream(text)

    async def clear_transcript(self) -> None:
        self.branches = ChatTree()
        self.selected = self.editing = None
        self._shown = {}
        self._notices = {}
        self._reply, self._reply_node = None, None
        await self.transcript.remove_children()

    async def _start_reply(self, *, replacing: bool) -> TreeMessage:
        """A reply after the branch's last message; ``replacing`` (a regeneration), a new
        version of the last reply, shown in its place."""
        parent = self.branches.head
        if replacing and parent is not None and self.branches[parent].role is Role.ASSISTANT:
            parent = self.branches[parent].parent
        node = self.branches.add(parent, Role.ASSISTANT)
        node.model = self.config.model  # its tokens are this model's
        self._reply_node = node
        self._reply_answer = self._reply_reasoning = ""
        if replacing:
            await self.show_branch()
            self._reply = self._shown[node.id]
        else:
            self._reply = self._widget(node)
            await self.transcript.mount(self._reply)
        return node

    async def apply(self, delta: ChatDelta) -> TreeMessage | None:
        """Render one frame's worth of change (ignored while the pane is being removed or is
        not composed yet: a frame may still be in flight for it). Returns the reply it
        started, if any (the recorder saves it after the message it follows)."""
        if not self.is_mounted or self._closing or not self.title_bar.is_attached:
            return None
        self.generating = delta.generating
        started = None
        if delta.started or (delta.text and self._reply is None):
            started = await self._start_reply(replacing=delta.replaces_last)
        if delta.reasoning and self._reply is not None and self.config.show_reasoning:
            await self._think(self._reply, delta.reasoning)
        if delta.text and self._reply is not None:
            if self._reply.thoughts is not None and delta.text.strip():
                self._reply.thoughts.settle()  # the answer begins: fold the thoughts away
            await self._reply.stream(delta.text)
        self._reply_answer += delta.text
        self._reply_reasoning += delta.reasoning
        if self._reply_node is not None:
            joined = ReasoningMarkers().join(self._reply_reasoning, self._reply_answer)
            self.branches.set_text(self._reply_node.id, joined)
            self._reply_node.tokens += delta.tokens
        if delta.finished is not None and self._reply is not None:
            reply, self._reply = self._reply, None
            if self._reply_node is not None and delta.reply_text is not None:
                self.branches.set_text(self._reply_node.id, delta.reply_text)
                tokens = self._reply_node.tokens
                del tokens[len(tokens) - delta.tokens_dropped :]  # a stop string's tokens
            self._reply_node = None
            self.last_reply_tokens = delta.reply_tokens
            self.last_reply_rate = delta.tokens_per_second
            self.last_stop = delta.finished
            self.finished_replies += 1
            if reply.thoughts is not None:
                reply.thoughts.settle()
            await reply.finish()
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
        return started

"""Analysis over capture tables: plain Python objects and DataFrames for notebooks and the CLI."""

from analyzer.analysis.conversations import Conversation as Conversation
from analyzer.analysis.conversations import ConversationNotFound as ConversationNotFound
from analyzer.analysis.conversations import Node as Node
from analyzer.analysis.conversations import build_conversation as build_conversation
from analyzer.analysis.conversations import conversation_from_frames as conversation_from_frames
from analyzer.analysis.conversations import list_conversations as list_conversations


"""Analysis over capture tables: plain Python objects and DataFrames for notebooks and the CLI."""

from analyzer.analysis.conversations import Conversation as Conversation
from analyzer.analysis.conversations import ConversationNotFound as ConversationNotFound
from analyzer.analysis.conversations import Node as Node
from analyzer.analysis.conversations import build_conversation as build_conversation
from analyzer.analysis.conversations import conversation_from_frames as conversation_from_frames
from analyzer.analysis.conversations import list_conversations as list_conversations
from analyzer.analysis.latency import api_latency as api_latency
from analyzer.analysis.latency import beacon_matches as beacon_matches
from analyzer.analysis.latency import compute_latency as compute_latency
from analyzer.analysis.latency import itl_gaps as itl_gaps
from analyzer.analysis.latency import stats as stats
from analyzer.analysis.latency import turn_latency as turn_latency
from analyzer.analysis.report import build_report as build_report
from analyzer.analysis.telemetry import identifiers as identifiers

"""Helpers shared by dialswitch's test tiers: RTP peers over loopback."""

"""qallegro.train"""

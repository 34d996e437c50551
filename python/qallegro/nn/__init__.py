"""qallegro.nn"""

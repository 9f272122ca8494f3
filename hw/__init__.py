"""striate.hw"""

"""striate.sw"""

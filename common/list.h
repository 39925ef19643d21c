/* SPDX-License-Identifier: MIT */
/* common/list.h: intrusive doubly linked lists. An item type has `prev` and
 * `next` members; the list is a pointer to its first item. */
#pragma once

#define LIST_PREPEND(head, item)                        \
        do {                                            \
                __typeof__(item) _li_ = (item);         \
                _li_->prev = NULL;                      \
                _li_->next = (head);                    \
                if (_li_->next)                         \
                        _li_->next->prev = _li_;        \
                (head) = _li_;                          \
        } while (0)

#define LIST_REMOVE(head, item)                         \
        do {                                            \
                __typeof__(item) _li_ = (item);         \
                if (_li_->prev)                         \
                        _li_->prev->next = _li_->next;  \
                else                                    \
                        (head) = _li_->next;            \
                if (_li_->next)                         \
                        _li_->next->prev = _li_->prev;  \
                _li_->prev = _li_->next = NULL;         \
        } while (0)
